package slurmrest

import (
	"context"
	"io"
	"net/http"

	gen "github.com/tether-hpc/tether/backends/slurmrest/internal/v0041"
)

// newV0041 adapts the generated v0.0.41 client: its calls; rest4x reads
// their answers.
func newV0041(base string, doer gen.HttpRequestDoer, t *transport) (api, error) {
	c, err := gen.NewClient(base, gen.WithHTTPClient(doer))
	if err != nil {
		return nil, err
	}
	return api4x{v: rest4x{e: endpointsV0041(c), t: t}}, nil
}

func endpointsV0041(c *gen.Client) endpoints {
	return endpoints{
		jobsState: func(ctx context.Context, ids []string) (*http.Response, error) {
			return c.SlurmV0041GetJobsState(ctx, &gen.SlurmV0041GetJobsStateParams{JobId: &ids})
		},
		getJob: func(ctx context.Context, id string) (*http.Response, error) { return c.SlurmV0041GetJob(ctx, id, nil) },
		listJobs: func(ctx context.Context, since *string) (*http.Response, error) {
			if since == nil {
				return c.SlurmV0041GetJobs(ctx, nil)
			}
			return c.SlurmV0041GetJobs(ctx, &gen.SlurmV0041GetJobsParams{UpdateTime: since})
		},
		submit: func(ctx context.Context, body io.Reader) (*http.Response, error) {
			return c.SlurmV0041PostJobSubmitWithBody(ctx, "application/json", body)
		},
		cancel: func(ctx context.Context, id string) (*http.Response, error) {
			return c.SlurmV0041DeleteJob(ctx, id, nil)
		},
		ping: func(ctx context.Context) (*http.Response, error) { return c.SlurmV0041GetPing(ctx) },
		node: func(ctx context.Context, name string) (*http.Response, error) {
			return c.SlurmV0041GetNode(ctx, name, nil)
		},
		partitions: func(ctx context.Context) (*http.Response, error) {
			return c.SlurmV0041GetPartitions(ctx, nil)
		},
	}
}
