// Command clientgo drives Falco's own Go client library (github.com/falcosecurity/client-go v0.6.1, unmodified)
// against a Falconet server, as an existing Falco consumer would: OutputsWatch (sub), Get and Version over the
// UNIX socket or mTLS. It prints what it receives as JSON lines for tests/sdk_multilang to check.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/falcosecurity/client-go/pkg/api/outputs"
	"github.com/falcosecurity/client-go/pkg/api/version"
	"github.com/falcosecurity/client-go/pkg/client"
)

type alertLine struct {
	TimeNS       int64             `json:"time_ns"`
	Rule         string            `json:"rule"`
	Priority     int32             `json:"priority"`
	Source       string            `json:"source"`
	Hostname     string            `json:"hostname"`
	Output       string            `json:"output"`
	OutputFields map[string]string `json:"output_fields"`
	Tags         []string          `json:"tags"`
}

func line(r *outputs.Response) alertLine {
	tags := r.Tags
	if tags == nil {
		tags = []string{}
	}
	fields := r.OutputFields
	if fields == nil {
		fields = map[string]string{}
	}
	return alertLine{
		TimeNS: r.Time.AsTime().UnixNano(), Rule: r.Rule, Priority: int32(r.Priority), Source: r.Source,
		Hostname: r.Hostname, Output: r.Output, OutputFields: fields, Tags: tags,
	}
}

func main() {
	mode := flag.String("mode", "sub", "sub, get or version")
	unix := flag.String("unix-socket", "", "unix:///path of the server's socket")
	host := flag.String("host", "localhost", "mTLS host")
	port := flag.Uint("port", 5060, "mTLS port")
	ca := flag.String("ca", "", "CA certificate")
	cert := flag.String("cert", "", "client certificate")
	key := flag.String("key", "", "client key")
	count := flag.Int("count", 1, "sub: exit after this many alerts")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this long")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cfg := &client.Config{UnixSocketPath: *unix, Hostname: *host, Port: uint16(*port), CARootFile: *ca, CertFile: *cert, KeyFile: *key}
	c, err := client.NewForConfig(ctx, cfg)
	if err != nil {
		fail(err)
	}
	defer c.Close()
	enc := json.NewEncoder(os.Stdout)
	switch *mode {
	case "version":
		vc, err := c.Version()
		if err != nil {
			fail(err)
		}
		v, err := vc.Version(ctx, &version.Request{})
		if err != nil {
			fail(err)
		}
		_ = enc.Encode(map[string]any{"version": v.Version, "major": v.Major, "minor": v.Minor, "patch": v.Patch,
			"engine_version": v.EngineVersion, "engine_fields_checksum": v.EngineFieldsChecksum})
	case "get":
		oc, err := c.Outputs()
		if err != nil {
			fail(err)
		}
		stream, err := oc.Get(ctx, &outputs.Request{})
		if err != nil {
			fail(err)
		}
		for {
			r, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				fail(err)
			}
			_ = enc.Encode(line(r))
		}
	case "sub":
		n := 0
		done := errors.New("done")
		// The poll timeout is client-go's keep-alive period: its first request goes out after it.
		err := c.OutputsWatch(ctx, func(r *outputs.Response) error {
			_ = enc.Encode(line(r))
			n++
			if n >= *count {
				return done
			}
			return nil
		}, 200*time.Millisecond)
		if err != nil && !errors.Is(err, done) {
			fail(err)
		}
	default:
		fail(fmt.Errorf("unknown mode %q", *mode))
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "clientgo: %v\n", err)
	os.Exit(1)
}
