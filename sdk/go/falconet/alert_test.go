package falconet

import (
	"encoding/json"
	"os"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"falconet.local/sdk/go/api/falco/outputs"
	"falconet.local/sdk/go/api/falco/schema"
	typesv1 "falconet.local/sdk/go/api/falconet/v1/types"
)

// The shared vectors (sdk/python/testdata/alert_vectors.json): each `proto` must print as its `line`.
type vectorFile struct {
	Vectors []struct {
		Name  string `json:"name"`
		Line  string `json:"line"`
		Proto struct {
			Time struct {
				Seconds int64 `json:"seconds"`
				Nanos   int32 `json:"nanos"`
			} `json:"time"`
			Priority         int32             `json:"priority"`
			SourceDeprecated int32             `json:"source_deprecated"`
			Rule             string            `json:"rule"`
			Output           string            `json:"output"`
			OutputFields     map[string]string `json:"output_fields"`
			OutputFieldsJSON []string          `json:"output_fields_json"`
			Hostname         string            `json:"hostname"`
			Tags             []string          `json:"tags"`
			Source           string            `json:"source"`
			Cursor           *struct {
				Epoch    string `json:"epoch"`
				Sequence uint64 `json:"sequence"`
			} `json:"cursor"`
		} `json:"proto"`
	} `json:"vectors"`
}

func TestVectorsPrintTheirCanonicalLine(t *testing.T) {
	data, err := os.ReadFile("../../python/testdata/alert_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(data, &vf); err != nil {
		t.Fatal(err)
	}
	if len(vf.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range vf.Vectors {
		p := v.Proto
		r := &outputs.Response{
			Time:     &timestamppb.Timestamp{Seconds: p.Time.Seconds, Nanos: p.Time.Nanos},
			Priority: schema.Priority(p.Priority), SourceDeprecated: schema.Source(p.SourceDeprecated),
			Rule: p.Rule, Output: p.Output, OutputFields: p.OutputFields, OutputFieldsJson: p.OutputFieldsJSON,
			Hostname: p.Hostname, Tags: p.Tags, Source: p.Source,
		}
		if p.Cursor != nil {
			r.Cursor = &typesv1.Cursor{Epoch: p.Cursor.Epoch, Sequence: p.Cursor.Sequence}
		}
		a, err := FromProto(r)
		if err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		got, err := a.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		if string(got) != v.Line {
			t.Errorf("%s:\n got %s\nwant %s", v.Name, got, v.Line)
		}
	}
}

func TestAnyWireAlertDecodesAndPrints(t *testing.T) {
	// What no Falconet input accepts but the wire can carry: every client must still print it.
	r := &outputs.Response{
		Time:   &timestamppb.Timestamp{Seconds: 1 << 62, Nanos: -5},
		Rule:   "r",
		Output: "evil\x1b]0;x\x07\u009b2J\nFAKE",
		OutputFields: map[string]string{
			"bad": "not json", "nan": "NaN", "big": "1e400", "obj": `{"a":1}`, "int": "1180591620717411303424",
		},
		OutputFieldsJson: []string{"bad", "nan", "big", "obj", "int"},
		Priority:         schema.Priority(99),
	}
	a, err := FromProto(r)
	if err != nil {
		t.Fatal(err)
	}
	line, err := a.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(line, &doc); err != nil {
		t.Fatalf("not JSON: %v: %s", err, line)
	}
	fields := doc["output_fields"].(map[string]any)
	if fields["bad"] != "not json" || fields["nan"] != "NaN" || fields["big"] != "1e400" || fields["obj"] != `{"a":1}` {
		t.Errorf("fields %v", fields)
	}
	for _, c := range string(line) {
		if c < 0x20 || (c >= 0x7f && c < 0xa0) {
			t.Fatalf("raw control %q in %s", c, line)
		}
	}
}

func TestParseStartAndPriority(t *testing.T) {
	if _, err := ParseStart("abc:0"); err == nil {
		t.Error("sequence 0 accepted")
	}
	s, err := ParseStart("ep:och:12")
	if err != nil || s.after == nil || s.after.Epoch != "ep:och" || s.after.Sequence != 12 {
		t.Errorf("ParseStart(ep:och:12) = %+v, %v", s, err)
	}
	if p, err := ParsePriority("info"); err != nil || p != schema.Priority_INFORMATIONAL {
		t.Errorf("info -> %v, %v", p, err)
	}
	if _, err := ParsePriority("loud"); err == nil {
		t.Error("unknown priority accepted")
	}
}

func TestJSONStringsAreEscapedAsPythonDoes(t *testing.T) {
	// json_safe(json.dumps("\x01\x1f\x7f\"\\\n\t\r\b\f é\u2028<>&\u009b\u202e", ensure_ascii=False))
	in := "\x01\x1f\x7f\"\\\n\t\r\b\f é\u2028<>&\u009b\u202e"
	want := `"\u0001\u001f\u007f\"\\\n\t\r\b\f é\u2028<>&\u009b\u202e"`
	if got := string(appendJSONString(nil, in)); got != want {
		t.Errorf("got %q want %q", got, want)
	}
}
