// Command falconet-subscribe prints a Falconet server's alerts as the alert JSON, one per line: the Go SDK's
// example, and what the multi-language tests and bench/sdk_clients.py run.
//
//	falconet-subscribe --unix-socket /run/falconet/falconet.sock --from oldest --count 10
//	falconet-subscribe --addr localhost:5060 --ca certs/ca.crt --cert certs/client.crt --key certs/client.key
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"falconet.local/sdk/go/falconet"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	os.Exit(run())
}

func run() int {
	var cfg falconet.Config
	var filter falconet.Filter
	var rules, tags listFlag
	from := flag.String("from", "now", "where to start: oldest, now, or a cursor EPOCH:SEQUENCE")
	count := flag.Int("count", 0, "exit after this many alerts (0: never)")
	batched := flag.Bool("batched", false, "use Falconet's batched stream instead of Falco's sub")
	output := flag.String("output", "json", "json (the alert JSON, one per line) or none (count only)")
	stats := flag.Bool("stats", false, "print the receive rate (first to last alert) on stderr at the end")
	flag.StringVar(&cfg.UnixSocket, "unix-socket", "", "the daemon's UNIX socket (path or unix:// URL)")
	flag.StringVar(&cfg.Address, "addr", "", "host:port of an mTLS listener")
	flag.StringVar(&cfg.CACert, "ca", "", "CA certificate (PEM)")
	flag.StringVar(&cfg.ClientCert, "cert", "", "client certificate (PEM)")
	flag.StringVar(&cfg.ClientKey, "key", "", "client key (PEM)")
	flag.StringVar(&cfg.ServerName, "server-name", "", "name to check in the server certificate (default: the host of --addr)")
	flag.StringVar(&filter.MinPriority, "min-priority", "", "only alerts of this priority or more severe")
	flag.Var(&rules, "rule", "only alerts of this rule (repeatable)")
	flag.Var(&tags, "tag", "only alerts with this tag (repeatable)")
	flag.Parse()
	filter.Rules, filter.Tags = rules, tags
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "falconet-subscribe: %v\n", err)
		return 1
	}
	if *output != "json" && *output != "none" {
		return fail(fmt.Errorf("--output must be json or none, not %q", *output))
	}
	start, err := falconet.ParseStart(*from)
	if err != nil {
		return fail(err)
	}
	if cfg.UnixSocket == "" && cfg.Address == "" {
		cfg.UnixSocket = "/run/falconet/falconet.sock"
	}
	client, err := falconet.Dial(cfg)
	if err != nil {
		return fail(err)
	}
	defer client.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := bufio.NewWriterSize(os.Stdout, 1<<16)
	defer out.Flush()
	n := 0
	var first time.Time
	opts := falconet.SubscribeOptions{
		Batched:  *batched,
		FailFast: true,
		OnReconnect: func(err error, wait time.Duration) {
			fmt.Fprintf(os.Stderr, "falconet-subscribe: %v; reconnecting in %s\n", err, wait)
		},
		OnWarning: func(msg string) {
			fmt.Fprintf(os.Stderr, "falconet-subscribe: warning: %s\n", msg)
		},
	}
	err = client.SubscribeWith(ctx, filter, start, opts, func(a *falconet.Alert) error {
		if n == 0 {
			first = time.Now()
		}
		n++
		if *output == "json" {
			line, err := a.MarshalJSON()
			if err != nil {
				return err
			}
			out.Write(line)
			out.WriteByte('\n')
			// Flush per alert, so a reader sees each alert as it comes (--output none for throughput).
			if err := out.Flush(); err != nil {
				return err
			}
		}
		if *count > 0 && n >= *count {
			return falconet.ErrStop
		}
		return nil
	})
	if *stats && n > 0 {
		secs := time.Since(first).Seconds()
		fmt.Fprintf(os.Stderr, "received %d alerts in %.6f s\n", n, secs)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		out.Flush()
		return fail(err)
	}
	return 0
}
