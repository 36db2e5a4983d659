package falconet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/metadata"

	"falconet.local/sdk/go/api/falco/outputs"
	falconetv1 "falconet.local/sdk/go/api/falconet/v1"
	typesv1 "falconet.local/sdk/go/api/falconet/v1/types"
)

// ErrStop, returned by a Subscribe callback, ends the subscription without an error.
var ErrStop = errors.New("stop subscription")

// SubscribeOptions tunes Subscribe; the zero value is Falco's `sub` with reconnection.
type SubscribeOptions struct {
	// Batched uses Falconet's falconet.v1.AlertService/Subscribe (many alerts per message) instead of Falco's sub.
	Batched bool
	// MaxBatch bounds alerts per message on the batched stream; 0 lets the server choose.
	MaxBatch uint32
	// MinBackoff and MaxBackoff bound the wait between reconnection attempts (defaults 100ms and 5s).
	MinBackoff, MaxBackoff time.Duration
	// OnReconnect, if set, is told about each failure that is retried.
	OnReconnect func(err error, wait time.Duration)
	// FailFast returns the first connection failure instead of retrying, until one stream has been opened:
	// a command-line tool pointed at the wrong socket should say so, not wait for it.
	FailFast bool
	// OnWarning, if set, is told what the subscription cannot do as asked: a malformed falconet-position
	// header (ignored), or a reconnect that may miss alerts because it has no position to resume after.
	OnWarning func(msg string)
}

// Subscribe streams alerts matching filter from the start position to fn until ctx ends, fn returns an error
// (ErrStop: a clean end) or a permanent error occurs (a refused certificate, an invalid filter). Lost
// connections are retried with back-off and resume just after the last alert delivered (before the first one,
// at the position the server reported in its falconet-position header), so nothing retained is missed or
// repeated.
func (c *Client) Subscribe(ctx context.Context, filter Filter, from Start, fn func(*Alert) error) error {
	return c.SubscribeWith(ctx, filter, from, SubscribeOptions{}, fn)
}

// SubscribeWith is Subscribe with options (the batched stream, back-off bounds).
func (c *Client) SubscribeWith(ctx context.Context, filter Filter, from Start, o SubscribeOptions, fn func(*Alert) error) error {
	pf, err := filter.proto()
	if err != nil {
		return err
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	wait := o.MinBackoff
	opened := false
	warn := func(msg string) {
		if o.OnWarning != nil {
			o.OnWarning(msg)
		}
	}
	r := &resume{from: from}
	for {
		delivered := false
		started := func(md metadata.MD) {
			p, ok, err := positionOf(md)
			if err != nil {
				warn(fmt.Sprintf("ignoring the server's %v", err))
			} else if ok {
				r.startedAt(p)
			}
		}
		err := c.stream(ctx, pf, r.from, o, &opened, started, func(a *Alert) error {
			delivered = true
			r.delivered(a.Cursor)
			return fn(a)
		})
		if errors.Is(err, ErrStop) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ce *ConnectError
		if err != nil && (!errors.As(err, &ce) || ce.Permanent || (o.FailFast && !opened)) {
			return err
		}
		if delivered {
			wait = o.MinBackoff
		}
		if o.OnReconnect != nil {
			if err == nil {
				err = &ConnectError{Target: c.target, Detail: "the server ended the stream"}
			}
			o.OnReconnect(err, wait)
		}
		if r.blindSpot() {
			warn("no alert received yet and the server reported no start position, so alerts published while disconnected may be missed")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, o.MaxBackoff)
	}
}

// stream runs one connection's worth of a subscription; nil means the server ended the stream.
// started is given the stream's initial metadata (its falconet-position) before the first alert.
func (c *Client) stream(ctx context.Context, pf *typesv1.Filter, from Start, o SubscribeOptions, opened *bool, started func(metadata.MD), fn func(*Alert) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deliver := func(r *outputs.Response) error {
		a, err := FromProto(r)
		if err != nil {
			return err
		}
		return fn(a)
	}
	if o.Batched {
		s, err := c.alerts.Subscribe(ctx, &falconetv1.SubscribeRequest{Filter: pf, Start: from.proto(), MaxBatch: o.MaxBatch})
		if err != nil {
			return c.explain(err)
		}
		*opened = true
		// Header waits for the initial metadata; an error here also ends the stream, and Recv reports it.
		if md, err := s.Header(); err == nil {
			started(md)
		}
		for {
			batch, err := s.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return c.explain(err)
			}
			for _, r := range batch.GetAlerts() {
				if err := deliver(r); err != nil {
					return err
				}
			}
		}
	}
	s, err := c.outputs.Sub(ctx)
	if err != nil {
		return c.explain(err)
	}
	*opened = true
	// One request carries the filter and start; the server streams from then on without further requests.
	if err := s.Send(&outputs.Request{Filter: pf, Start: from.proto()}); err != nil && !errors.Is(err, io.EOF) {
		return c.explain(err)
	}
	if md, err := s.Header(); err == nil {
		started(md)
	}
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return c.explain(err)
		}
		if err := deliver(r); err != nil {
			return err
		}
	}
}
