package slurmrest

import (
	"context"
	"io"
	"net/http"

	gen "github.com/tether-hpc/tether/backends/slurmrest/internal/v0042"
)

// newV0042 adapts the generated v0.0.42 client: its calls; rest4x reads
// their answers.
func newV0042(base string, doer gen.HttpRequestDoer, t *transport) (api, error) {
	c, err := gen.NewClient(base, gen.WithHTTPClient(doer))
	if err != nil {
		return nil, err
	}
	return api4x{v: rest4x{e: endpointsV0042(c), t: t}}, nil
}

func endpointsV0042(c *gen.Client) endpoints {
	return endpoints{
		jobsState: func(ctx context.Context, ids []string) (*http.Response, error) {
			return c.SlurmV0042GetJobsState(ctx, &gen.SlurmV0042GetJobsStateParams{JobId: &ids})
		},
		getJob: func(ctx context.Context, id string) (*http.Response, error) { return c.SlurmV0042GetJob(ctx, id, nil) },
		listJobs: func(ctx context.Context, since *string) (*http.Response, error) {
			if since == nil {
				return c.SlurmV0042GetJobs(ctx, nil)
			}
			return c.SlurmV0042GetJobs(ctx, &gen.SlurmV0042GetJobsParams{UpdateTime: since})
		},
		submit: func(ctx context.Context, body io.Reader) (*http.Response, error) {
			return c.SlurmV0042PostJobSubmitWithBody(ctx, "application/json", body)
		},
		cancel: func(ctx context.Context, id string) (*http.Response, error) {
			return c.SlurmV0042DeleteJob(ctx, id, nil)
		},
		ping: func(ctx context.Context) (*http.Response, error) { return c.SlurmV0042GetPing(ctx) },
		node: func(ctx context.Context, name string) (*http.Response, error) {
			return c.SlurmV0042GetNode(ctx, name, nil)
		},
		partitions: func(ctx context.Context) (*http.Response, error) {
			return c.SlurmV0042GetPartitions(ctx, nil)
		},
	}
}
