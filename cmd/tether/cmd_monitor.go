package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/schema"
)

func (a *app) monitorCmd() *cobra.Command {
	var (
		listen    string
		statOnly  bool
		statEvery time.Duration
	)
	c := &cobra.Command{
		Use:   "monitor [flags] [SITE...]",
		Short: "Watch every active run of the sites and serve Prometheus metrics",
		Long: `monitor runs as a service next to Airflow. It watches every active run under
the sites' state directories (new runs appear without a restart), polls each
site's scheduler in one batched query per cycle (shared with every tether
wait on the site), decides the runs whose tether process is gone, and serves
/metrics, /healthz and /runs (JSON). SIGTERM stops it cleanly.

SITE is a name or a path; without one, --site, $TETHER_SITE or the embedded
local site is watched.`,
		Args: usageArgs(cobra.ArbitraryArgs),
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signalContext(c.Context())
			defer stop()
			var sites []*schema.Site
			if len(args) == 0 {
				s, err := a.loadSite()
				if err != nil {
					return err
				}
				sites = append(sites, s)
			}
			for _, arg := range args {
				a.siteArg = arg
				s, err := a.loadSite()
				if err != nil {
					return err
				}
				sites = append(sites, s)
			}
			host, _ := os.Hostname()
			var rts []*monitor.SiteRuntime
			for _, site := range sites {
				s, err := a.open(site)
				if err != nil {
					return fmt.Errorf("site %s: %w", site.Name, err)
				}
				s.engine.Actor = fmt.Sprintf("tether monitor pid %d on %s", os.Getpid(), host)
				rts = append(rts, &monitor.SiteRuntime{Site: site, Store: s.store, Engine: s.engine})
			}
			m := monitor.NewMonitor(rts, version, a.now, a.log)
			m.StatOnly, m.StatEvery = statOnly, statEvery
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return usageError{fmt.Errorf("listen on %s: %w", listen, err)}
			}
			srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			a.logf("monitor serving http://%s/metrics for %d site(s)", ln.Addr(), len(rts))
			runErr := m.Run(ctx)
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(shutdown)
			if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			a.logf("monitor stopped")
			return runErr
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:9464", "address for /metrics, /healthz and /runs")
	c.Flags().BoolVar(&statOnly, "stat-only", false, "do not use inotify: stat the active runs' files every --stat-every (automatic on NFS, Lustre, GPFS and other shared filesystems)")
	c.Flags().DurationVar(&statEvery, "stat-every", 5*time.Second, "how often the stat fallback looks at the active runs' status and exit files")
	return c
}
