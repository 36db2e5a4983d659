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

func TestMarkedFieldThatIsNotJSONIsAnError(t *testing.T) {
	r := &outputs.Response{OutputFields: map[string]string{"x": "not json"}, OutputFieldsJson: []string{"x"}}
	if _, err := FromProto(r); err == nil {
		t.Fatal("expected an error")
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
	// json.dumps("\x01\x1f\x7f\"\\\n\t\r\b\f é\u2028<>&", ensure_ascii=False)
	in := "\x01\x1f\x7f\"\\\n\t\r\b\f é\u2028<>&"
	want := `"\u0001\u001f` + "\x7f" + `\"\\\n\t\r\b\f é` + "\u2028" + `<>&"`
	if got := string(appendJSONString(nil, in)); got != want {
		t.Errorf("got %q want %q", got, want)
	}
}
