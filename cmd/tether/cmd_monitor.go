package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"github.com/spf13/cobra"
	"github.com/tether-hpc/tether/monitor"
	"github.com/tether-hpc/tether/schema"
)

func (a *app) monitorCmd() *cobra.Command {
	var (
		listen    string
		webConfig string
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

It listens on 127.0.0.1 unless --listen says otherwise. --web.config.file
takes a Prometheus exporter web configuration (the exporter-toolkit format:
tls_server_config for HTTPS, basic_auth_users with bcrypt hashes); it is
checked before the monitor starts, and read again on each request and TLS
handshake, so a new password or certificate needs no restart.

SITE is a name or a path; without one, --site, $TETHER_SITE or the embedded
local site is watched.`,
		Args: usageArgs(cobra.ArbitraryArgs),
		RunE: func(c *cobra.Command, args []string) error {
			// A bad web config file is a bad command line: say so
			// before opening any site or port.
			if webConfig != "" {
				if err := web.Validate(webConfig); err != nil {
					hint := ""
					if strings.Contains(err.Error(), "bcrypt") {
						hint = " (basic_auth_users maps each user to a bcrypt hash of the password, e.g. from htpasswd -nBC 10 USER)"
					}
					return usageError{fmt.Errorf("--web.config.file %s: %w%s", webConfig, err, hint)}
				}
			}
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
				// a cycle never blocks on a submit limit: the attempt stays
				// unsent and the next cycle sends it again
				s.submitter.LimitWait = 0
				rts = append(rts, &monitor.SiteRuntime{Site: site, Store: s.store, Engine: s.engine})
			}
			m := monitor.NewMonitor(rts, version, a.now, a.log)
			m.StatOnly, m.StatEvery = statOnly, statEvery
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return usageError{fmt.Errorf("listen on %s: %w", listen, err)}
			}
			srv := newMetricsServer(m.Handler())
			// web.Serve adds TLS and basic auth from the web config file
			// (plain HTTP without one) and returns when srv shuts down;
			// if it fails first, the monitor stops with its error.
			runCtx, cancelRun := context.WithCancel(ctx)
			defer cancelRun()
			errc := make(chan error, 1)
			go func() {
				err := web.Serve(ln, srv, &web.FlagConfig{WebConfigFile: &webConfig}, a.log)
				if !errors.Is(err, http.ErrServerClosed) {
					cancelRun()
				}
				errc <- err
			}()
			how := ""
			switch {
			case webConfig != "":
				how = " (https where " + webConfig + " sets TLS, with its basic auth)"
			case !isLoopback(ln.Addr()):
				a.logf("warning: serving /metrics and /runs on %s without --web.config.file: anyone who can reach the port can read them", ln.Addr())
			}
			a.logf("monitor serving http://%s/metrics%s for %d site(s)", ln.Addr(), how, len(rts))
			runErr := m.Run(runCtx)
			shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(shutdown)
			if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
			}
			a.logf("monitor stopped")
			return runErr
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:9464", "address for the runs page (/), /metrics, /healthz and /runs")
	c.Flags().StringVar(&webConfig, "web.config.file", "", "Prometheus exporter web config file (exporter-toolkit format) for TLS and basic auth")
	c.Flags().BoolVar(&statOnly, "stat-only", false, "do not use inotify: stat the active runs' files every --stat-every (automatic on NFS, Lustre, GPFS and other shared filesystems)")
	c.Flags().DurationVar(&statEvery, "stat-every", 5*time.Second, "how often the stat fallback looks at the active runs' status and exit files")
	return c
}

// Timeouts of the metrics server: a slow or stuck client cannot hold a
// connection (and its goroutine) for long. A scrape of many thousand runs
// is written well within serverWriteTimeout.
const (
	serverReadHeaderTimeout = 10 * time.Second
	serverReadTimeout       = 30 * time.Second
	serverWriteTimeout      = 60 * time.Second
	serverIdleTimeout       = 2 * time.Minute
)

func newMetricsServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: serverReadHeaderTimeout,
		ReadTimeout:       serverReadTimeout,
		WriteTimeout:      serverWriteTimeout,
		IdleTimeout:       serverIdleTimeout,
	}
}

// isLoopback reports whether a listener's address is only reachable from
// this host.
func isLoopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
