package slurmrest

import (
	"context"
	"io"
	"net/http"

	gen "github.com/tether-hpc/tether/backends/slurmrest/internal/v0040"
)

// newV0040 adapts the generated v0.0.40 client: its calls; rest4x reads
// their answers.
func newV0040(base string, doer gen.HttpRequestDoer, t *transport) (api, error) {
	c, err := gen.NewClient(base, gen.WithHTTPClient(doer))
	if err != nil {
		return nil, err
	}
	return api4x{v: rest4x{e: endpointsV0040(c), t: t}}, nil
}

func endpointsV0040(c *gen.Client) endpoints {
	return endpoints{
		jobsState: func(ctx context.Context, ids []string) (*http.Response, error) {
			return c.SlurmV0040GetJobsState(ctx, &gen.SlurmV0040GetJobsStateParams{JobId: &ids})
		},
		getJob: func(ctx context.Context, id string) (*http.Response, error) { return c.SlurmV0040GetJob(ctx, id, nil) },
		listJobs: func(ctx context.Context, since *string) (*http.Response, error) {
			if since == nil {
				return c.SlurmV0040GetJobs(ctx, nil)
			}
			return c.SlurmV0040GetJobs(ctx, &gen.SlurmV0040GetJobsParams{UpdateTime: since})
		},
		submit: func(ctx context.Context, body io.Reader) (*http.Response, error) {
			return c.SlurmV0040PostJobSubmitWithBody(ctx, "application/json", body)
		},
		cancel: func(ctx context.Context, id string) (*http.Response, error) {
			return c.SlurmV0040DeleteJob(ctx, id, nil)
		},
		ping: func(ctx context.Context) (*http.Response, error) { return c.SlurmV0040GetPing(ctx) },
		node: func(ctx context.Context, name string) (*http.Response, error) {
			return c.SlurmV0040GetNode(ctx, name, nil)
		},
		partitions: func(ctx context.Context) (*http.Response, error) {
			return c.SlurmV0040GetPartitions(ctx, nil)
		},
	}
}
