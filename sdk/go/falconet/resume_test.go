package falconet

import (
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestParsePositionAcceptsSequenceZero(t *testing.T) {
	for in, want := range map[string]Cursor{
		"3f2a9c:0":     {Epoch: "3f2a9c", Sequence: 0},
		"3f2a9c:42":    {Epoch: "3f2a9c", Sequence: 42},
		"a:b:7":        {Epoch: "a:b", Sequence: 7}, // the sequence follows the last colon
		"e:0000000012": {Epoch: "e", Sequence: 12},
	} {
		got, err := ParsePosition(in)
		if err != nil || got != want {
			t.Errorf("ParsePosition(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestParsePositionRejectsMalformedValues(t *testing.T) {
	for _, in := range []string{"", "epoch", ":5", "e:", "e:-1", "e:+1", "e: 1", "e:1x", "e:0x10",
		"e:18446744073709551616"} {
		if c, err := ParsePosition(in); err == nil {
			t.Errorf("ParsePosition(%q) = %v; want an error", in, c)
		} else if !strings.Contains(err.Error(), PositionHeader) {
			t.Errorf("ParsePosition(%q) error %q does not name the header", in, err)
		}
	}
}

func TestCursorFlagStillRejectsSequenceZero(t *testing.T) {
	if _, err := ParseStart("3f2a9c:0"); err == nil {
		t.Fatal("ParseStart accepted sequence 0: an alert's cursor starts at 1")
	}
	if _, err := ParseCursor("3f2a9c:0"); err == nil {
		t.Fatal("ParseCursor accepted sequence 0")
	}
}

func TestPositionOfMetadata(t *testing.T) {
	if _, ok, err := positionOf(metadata.Pairs("other", "x")); ok || err != nil {
		t.Errorf("absent header: ok=%v err=%v", ok, err)
	}
	c, ok, err := positionOf(metadata.Pairs(PositionHeader, "ep:0"))
	if !ok || err != nil || c != (Cursor{Epoch: "ep", Sequence: 0}) {
		t.Errorf("present header: %v ok=%v err=%v", c, ok, err)
	}
	if _, ok, err := positionOf(metadata.Pairs(PositionHeader, "garbage")); !ok || err == nil {
		t.Errorf("malformed header: ok=%v err=%v; want ok and an error", ok, err)
	}
}

func TestResumeKeepsThePositionUntilAnAlertReplacesIt(t *testing.T) {
	r := &resume{from: FromNow()}
	if !r.blindSpot() {
		t.Fatal("a subscription from now with no position must report the blind spot")
	}
	r.startedAt(Cursor{Epoch: "e1", Sequence: 0})
	if r.blindSpot() || r.from.after == nil || *r.from.after != (Cursor{Epoch: "e1", Sequence: 0}) {
		t.Fatalf("position e1:0 not kept: %+v", r.from)
	}
	if got := r.from.proto().GetAfter(); got.GetEpoch() != "e1" || got.GetSequence() != 0 {
		t.Fatalf("reconnect would not send start.after e1:0: %v", r.from.proto())
	}
	r.delivered(&Cursor{Epoch: "e1", Sequence: 5})
	r.delivered(nil)                              // an alert without a cursor (a Falco server) moves nothing
	r.startedAt(Cursor{Epoch: "e1", Sequence: 3}) // behind the last alert of the same run: ignored
	if *r.from.after != (Cursor{Epoch: "e1", Sequence: 5}) {
		t.Fatalf("resume went backwards: %v", r.from.after)
	}
	r.startedAt(Cursor{Epoch: "e1", Sequence: 9})
	if *r.from.after != (Cursor{Epoch: "e1", Sequence: 9}) {
		t.Fatalf("a later position of the same run not taken: %v", r.from.after)
	}
	r.startedAt(Cursor{Epoch: "e2", Sequence: 1}) // a new run: the old cursor is stale
	if *r.from.after != (Cursor{Epoch: "e2", Sequence: 1}) {
		t.Fatalf("a position from a new epoch did not replace the stale cursor: %v", r.from.after)
	}
}

func TestResumeFromOldestHasNoBlindSpot(t *testing.T) {
	if (&resume{from: FromOldest()}).blindSpot() {
		t.Fatal("oldest resumes from the oldest retained alert; nothing is missed")
	}
}
