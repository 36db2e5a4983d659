package falconet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"falconet.local/sdk/go/api/falco/outputs"
	"falconet.local/sdk/go/api/falco/schema"
	"falconet.local/sdk/go/api/falco/version"
	falconetv1 "falconet.local/sdk/go/api/falconet/v1"
	typesv1 "falconet.local/sdk/go/api/falconet/v1/types"
)

// Client talks to one Falconet (or Falco) server. Safe for concurrent use.
type Client struct {
	conn    *grpc.ClientConn
	target  string
	tls     bool
	outputs outputs.ServiceClient
	version version.ServiceClient
	alerts  falconetv1.AlertServiceClient
}

// Dial checks the configuration and certificate files and prepares a connection; the network connection itself
// is made by the first call (and remade after failures) so that Subscribe can outlive server restarts.
func Dial(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	timeout := cfg.DialTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	var target string
	var opts []grpc.DialOption
	if cfg.UnixSocket != "" {
		path := socketPath(cfg.UnixSocket)
		target = "unix:" + path // unix:/abs/path or unix:rel/path; grpc-go sends :authority localhost
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		tc, err := cfg.tlsConfig()
		if err != nil {
			return nil, err
		}
		target = "dns:///" + cfg.Address
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	}
	opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	// Large static flow-control windows: with the 64 KiB default and BDP estimation a fast stream of ~600-byte
	// alerts stalls on window updates (3,400/s instead of 7,500/s on Falco's sub in bench/sdk_clients.py).
	opts = append(opts, grpc.WithInitialWindowSize(4<<20), grpc.WithInitialConnWindowSize(8<<20))
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, configErrorf("cannot set up a connection to %s: %v", describe(cfg), err)
	}
	return &Client{
		conn:    conn,
		target:  describe(cfg),
		tls:     cfg.UnixSocket == "",
		outputs: outputs.NewServiceClient(conn),
		version: version.NewServiceClient(conn),
		alerts:  falconetv1.NewAlertServiceClient(conn),
	}, nil
}

func describe(cfg Config) string {
	if cfg.UnixSocket != "" {
		return "unix://" + socketPath(cfg.UnixSocket)
	}
	return cfg.Address + " (mTLS)"
}

// Close releases the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn exposes the underlying connection for the generated stubs (e.g. the inputs service).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Version asks the server for its version and the rules-engine version it implements.
func (c *Client) Version(ctx context.Context) (*version.Response, error) {
	r, err := c.version.Version(ctx, &version.Request{})
	if err != nil {
		return nil, c.explain(err)
	}
	return r, nil
}

// Filter selects alerts on the server; the zero value accepts every alert.
type Filter struct {
	// MinPriority is a priority name in any case ("warning", "Info", ...); empty: no minimum.
	MinPriority string
	Rules       []string
	Tags        []string
	Sources     []string
	// Hosts selects alerts by host name (a fleet aggregator serves many hosts; a node only its own).
	Hosts []string
}

var priorityAliases = map[string]schema.Priority{"INFO": schema.Priority_INFORMATIONAL}

// ParsePriority reads any spelling Falco accepts.
func ParsePriority(s string) (schema.Priority, error) {
	key := strings.ToUpper(strings.TrimSpace(s))
	if p, ok := priorityAliases[key]; ok {
		return p, nil
	}
	if v, ok := schema.Priority_value[key]; ok {
		return schema.Priority(v), nil
	}
	return 0, fmt.Errorf("unknown priority %q; expected one of Emergency, Alert, Critical, Error, Warning, Notice, Informational, Debug (any case), or Info", s)
}

func (f Filter) proto() (*typesv1.Filter, error) {
	if f.MinPriority == "" && len(f.Rules) == 0 && len(f.Tags) == 0 && len(f.Sources) == 0 && len(f.Hosts) == 0 {
		return nil, nil
	}
	pf := &typesv1.Filter{Rules: f.Rules, Tags: f.Tags, Sources: f.Sources, Hosts: f.Hosts}
	if f.MinPriority != "" {
		p, err := ParsePriority(f.MinPriority)
		if err != nil {
			return nil, err
		}
		pf.MinPriority = &p
	}
	return pf, nil
}

// Start says where reading begins. The zero value is "now".
type Start struct {
	oldest bool
	after  *Cursor
}

// FromNow reads only alerts published from now on.
func FromNow() Start { return Start{} }

// FromOldest reads from the oldest alert the server retains.
func FromOldest() Start { return Start{oldest: true} }

// After reads the alerts after this cursor (the oldest retained, after an internal gap alert, if it is gone).
func After(c Cursor) Start { return Start{after: &c} }

// ParseStart reads "oldest", "now" or a cursor EPOCH:SEQUENCE.
func ParseStart(s string) (Start, error) {
	switch strings.ToLower(s) {
	case "oldest":
		return FromOldest(), nil
	case "now", "":
		return FromNow(), nil
	}
	c, err := ParseCursor(s)
	if err != nil {
		return Start{}, fmt.Errorf("invalid start %q; expected oldest, now or a cursor EPOCH:SEQUENCE", s)
	}
	return After(c), nil
}

func (s Start) proto() *typesv1.Start {
	switch {
	case s.after != nil:
		return &typesv1.Start{At: &typesv1.Start_After{After: &typesv1.Cursor{Epoch: s.after.Epoch, Sequence: s.after.Sequence}}}
	case s.oldest:
		return &typesv1.Start{At: &typesv1.Start_Position_{Position: typesv1.Start_POSITION_OLDEST}}
	}
	return &typesv1.Start{At: &typesv1.Start_Position_{Position: typesv1.Start_POSITION_NOW}}
}

// Get returns the retained alerts matching the filter from the start position on (non-destructive: it sends a
// start position, so no Falco cursor moves).
func (c *Client) Get(ctx context.Context, filter Filter, from Start) ([]*Alert, error) {
	pf, err := filter.proto()
	if err != nil {
		return nil, err
	}
	stream, err := c.outputs.Get(ctx, &outputs.Request{Filter: pf, Start: from.proto()})
	if err != nil {
		return nil, c.explain(err)
	}
	var out []*Alert
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, c.explain(err)
		}
		a, err := FromProto(r)
		if err != nil {
			return out, err
		}
		out = append(out, a)
	}
}

// ConnectError is a failure to reach or authenticate with the server; Permanent ones (a refused certificate,
// a rejected request) are not retried by Subscribe.
type ConnectError struct {
	Target    string
	Code      codes.Code
	Detail    string
	Permanent bool
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("%s: %s", e.Target, e.Detail)
}

// explain turns a gRPC status into a ConnectError that says what was tried and, for TLS, why it was refused.
func (c *Client) explain(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	e := &ConnectError{Target: c.target, Code: st.Code(), Detail: fmt.Sprintf("%s: %s", st.Code(), msg)}
	switch st.Code() {
	case codes.Unavailable:
		if i := strings.Index(msg, "authentication handshake failed: "); i >= 0 {
			reason := strings.TrimSuffix(msg[i+len("authentication handshake failed: "):], "\"")
			e.Detail = "TLS handshake failed: " + tlsReason(reason)
			e.Permanent = true
		} else if strings.Contains(msg, "tls: ") || strings.Contains(msg, "certificate") {
			// With TLS 1.3 the server's refusal of our certificate arrives as an alert after the handshake.
			e.Detail = "the server refused the connection during TLS: " + msg + " (is the client certificate signed by the server's CA?)"
			e.Permanent = true
		} else if c.tls && (strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset") || strings.Contains(msg, "EOF")) {
			e.Detail = "the server closed the connection during TLS (did it refuse the client certificate?): " + msg
		} else {
			e.Detail = "cannot connect: " + msg
		}
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented,
		codes.FailedPrecondition, codes.NotFound:
		e.Permanent = true
	}
	return e
}

func tlsReason(reason string) string {
	switch {
	case strings.Contains(reason, "certificate signed by unknown authority"):
		return "the server certificate is not signed by the given CA (" + reason + ")"
	case strings.Contains(reason, "certificate is valid for"):
		return "the server name is not in the server certificate's SANs (" + reason + ")"
	}
	return reason
}
