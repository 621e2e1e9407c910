package slurmrest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tether-hpc/tether/backends"
	"github.com/tether-hpc/tether/backends/internal/slurm"
)

// dbJobs is the part of a /slurmdb/v0.0.NN/jobs answer FindByTag reads;
// v0.0.38 (dbv0.0.38_job) and v0.0.40-42 (v0.0.4x_job) agree on it. The
// generated clients leave the slurmdbd plugin out.
type dbJobs struct {
	Jobs []struct {
		JobID   int64 `json:"job_id"`
		Comment struct {
			Job *string `json:"job"`
		} `json:"comment"`
		WorkingDirectory string `json:"working_directory"`
	} `json:"jobs"`
}

// errNothingFound: slurmdbd 22.05 answers an empty query with this error
// (ESLURM_REST_EMPTY_RESULT) and no jobs.
const errNothingFound = 9003

// dbJobsPath is the accounting job list of an API version.
func dbJobsPath(version string) string {
	if version == "v0.0.38" {
		return "/slurmdb/v0.0.38/jobs"
	}
	return "/slurmdb/" + version + "/jobs/"
}

// findInAccounting is FindByTag's accounting request: the jobs since the
// run was created (Slurm's parse_time() form, which every version takes),
// without their steps, of the token's user where the version can filter.
func (b *Backend) findInAccounting(ctx context.Context, tag string) (backends.JobID, bool, error) {
	version, err := b.Version(ctx)
	if err != nil {
		return "", false, err
	}
	t, _ := slurm.ParseTag(tag)
	q := url.Values{}
	q.Set("start_time", fmt.Sprintf("now-%dhours", t.LookBack(time.Now())))
	q.Set("skip_steps", "true")
	if b.cfg.User != "" && version != "v0.0.38" {
		q.Set("users", b.cfg.User)
	}
	what := "look for the job tagged " + tag + " in accounting"
	body, ok, err := b.slurmdbGet(ctx, dbJobsPath(version)+"?"+q.Encode(), what)
	if err != nil || !ok {
		return "", false, err
	}
	var d dbJobs
	if err := json.Unmarshal(body, &d); err != nil {
		return "", false, fmt.Errorf("%w: %s: slurmrestd's answer is not a job list: %w", backends.ErrUnavailable, what, err)
	}
	var best int64
	for _, j := range d.Jobs {
		if (j.Comment.Job != nil && *j.Comment.Job == tag) || t.IsWorkDir(j.WorkingDirectory) {
			best = max(best, j.JobID)
		}
	}
	if best == 0 {
		return "", false, nil
	}
	return backends.JobID(strconv.FormatInt(best, 10)), true, nil
}

// slurmdbGet GETs a path of slurmrestd's accounting plugin. ok is false
// when slurmrestd does not serve openapi/slurmdbd (warned once: a purged
// job cannot be found by its tag) and when slurmdbd found nothing; an
// answer with any other error is an error.
func (b *Backend) slurmdbGet(ctx context.Context, path, what string) ([]byte, bool, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.t.base+path, nil)
	if err != nil {
		return nil, false, err
	}
	resp, err := b.t.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %s: read the answer: %w", backends.ErrUnavailable, what, err)
	}
	if resp.StatusCode == http.StatusNotFound && !unknownJob(resp.StatusCode, body) {
		// openapi/slurmdbd is not loaded (plain-text 404)
		b.noSlurmdbOnce.Do(func() {
			b.cfg.Log.Warn("slurmrestd does not serve "+path+" (load the openapi/slurmdbd plugin, slurmrestd -s openapi/slurmctld,openapi/slurmdbd): "+
				"a job the controller has purged cannot be found by its tag, an attempt whose submit answer was lost may run twice, and usage comes from the exit file", "url", b.cfg.URL)
		})
		return nil, false, nil
	}
	num, _ := slurmErrorOf(body)
	switch {
	case num == errNothingFound || unknownJob(resp.StatusCode, body):
		return nil, false, nil
	case resp.StatusCode != http.StatusOK || num != 0:
		// an error, or a 200 with errors: slurmdbd could not answer in full
		return nil, false, b.t.answerError(what, resp.StatusCode, body, false)
	}
	return body, true, nil
}
