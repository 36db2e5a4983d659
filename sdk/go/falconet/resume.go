package falconet

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/metadata"
)

// PositionHeader is the initial-metadata key in which a Falconet server reports where a stream starts
// (docs/server.md): EPOCH:SEQ, the cursor just before the first alert the stream delivers. A subscription keeps
// it as its resume point until an alert's cursor replaces it, so one started at "now" and cut before its first
// alert resumes where it started instead of at a new "now" (which would miss what was published meanwhile).
const PositionHeader = "falconet-position"

// ParsePosition reads a falconet-position value. Unlike an alert's cursor (ParseCursor), the sequence may be 0:
// the position before a run's first alert.
func ParsePosition(s string) (Cursor, error) {
	i := strings.LastIndexByte(s, ':')
	seq := s[i+1:]
	if i <= 0 || seq == "" || strings.Trim(seq, "0123456789") != "" {
		return Cursor{}, fmt.Errorf("malformed %s %q; expected EPOCH:SEQ", PositionHeader, s)
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return Cursor{}, fmt.Errorf("malformed %s %q: %v", PositionHeader, s, err)
	}
	return Cursor{Epoch: s[:i], Sequence: n}, nil
}

// positionOf reads the header from a stream's initial metadata: ok is false if it is absent; err (with ok
// true) says it was present but malformed.
func positionOf(md metadata.MD) (c Cursor, ok bool, err error) {
	values := md.Get(PositionHeader)
	if len(values) == 0 {
		return Cursor{}, false, nil
	}
	c, err = ParsePosition(values[0])
	return c, true, err
}

// resume is a subscription's progress across reconnects: where the next stream starts.
type resume struct {
	from Start
}

// startedAt records the position a stream reported. It becomes the resume point unless it lies behind the
// current cursor of the same run (resuming never goes back); one from another run replaces a stale cursor.
func (r *resume) startedAt(p Cursor) {
	if last := r.from.after; last != nil && last.Epoch == p.Epoch && p.Sequence < last.Sequence {
		return
	}
	r.from = After(p)
}

// delivered records an alert's cursor: the next stream starts right after it.
func (r *resume) delivered(c *Cursor) {
	if c != nil {
		r.from = After(*c)
	}
}

// blindSpot is true while reconnecting could miss alerts: started at "now" with neither an alert's cursor nor
// a reported position to resume after (a server without the header, such as Falco, leaves this gap).
func (r *resume) blindSpot() bool { return r.from.after == nil && !r.from.oldest }
