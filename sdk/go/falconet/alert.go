package falconet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"falconet.local/sdk/go/api/falco/outputs"
	"falconet.local/sdk/go/api/falco/schema"
)

// Cursor is an alert's position in one run of the server's hub; printed as EPOCH:SEQUENCE.
type Cursor struct {
	Epoch    string `json:"epoch"`
	Sequence uint64 `json:"sequence"`
}

func (c Cursor) String() string { return fmt.Sprintf("%s:%d", c.Epoch, c.Sequence) }

// ParseCursor reads the EPOCH:SEQUENCE form.
func ParseCursor(s string) (Cursor, error) {
	i := strings.LastIndexByte(s, ':')
	var seq uint64
	if i <= 0 {
		return Cursor{}, fmt.Errorf("invalid cursor %q; expected EPOCH:SEQUENCE, e.g. 3f2a9c:42", s)
	}
	if _, err := fmt.Sscanf(s[i+1:], "%d", &seq); err != nil || seq < 1 || fmt.Sprint(seq) != s[i+1:] {
		return Cursor{}, fmt.Errorf("invalid cursor %q; expected EPOCH:SEQUENCE, e.g. 3f2a9c:42", s)
	}
	return Cursor{Epoch: s[:i], Sequence: seq}, nil
}

// Alert is one alert, decoded from falco.outputs.response.
type Alert struct {
	Time     time.Time
	Rule     string
	Priority schema.Priority
	Source   string
	Hostname string
	Output   string
	// OutputFields holds each value as JSON: a JSON string for string values, the JSON number, boolean or
	// null for the keys the server lists in output_fields_json (Falco's wire format has only strings).
	OutputFields map[string]json.RawMessage
	Tags         []string
	Cursor       *Cursor
}

// PriorityName is the spelling Falco uses in alerts ("Warning", "Informational", ...).
func PriorityName(p schema.Priority) string {
	name := schema.Priority_name[int32(p)] // the first alias declared: upper case
	if name == "" {
		return fmt.Sprintf("Priority(%d)", int32(p))
	}
	return name[:1] + strings.ToLower(name[1:])
}

// FromProto decodes a response; it fails only when a field marked JSON does not hold a JSON scalar.
func FromProto(r *outputs.Response) (*Alert, error) {
	typed := make(map[string]bool, len(r.GetOutputFieldsJson()))
	for _, k := range r.GetOutputFieldsJson() {
		typed[k] = true
	}
	fields := make(map[string]json.RawMessage, len(r.GetOutputFields()))
	for k, v := range r.GetOutputFields() {
		if typed[k] {
			raw := json.RawMessage(v)
			var scalar any
			if err := json.Unmarshal(raw, &scalar); err != nil {
				return nil, fmt.Errorf("output_fields[%q] is marked JSON but holds %q", k, v)
			}
			switch scalar.(type) {
			case nil, float64, bool:
			default:
				return nil, fmt.Errorf("output_fields[%q] must hold a JSON number, boolean or null, not %q", k, v)
			}
			fields[k] = raw
			continue
		}
		enc, err := marshalNoEscape(v)
		if err != nil {
			return nil, err
		}
		fields[k] = enc
	}
	source := r.GetSource()
	if source == "" { // a Falco server older than 0.31 sends only the enum
		source = strings.ToLower(schema.Source_name[int32(r.GetSourceDeprecated())])
	}
	a := &Alert{
		Rule:         r.GetRule(),
		Priority:     r.GetPriority(),
		Source:       source,
		Hostname:     r.GetHostname(),
		Output:       r.GetOutput(),
		OutputFields: fields,
		Tags:         append([]string{}, r.GetTags()...),
	}
	if ts := r.GetTime(); ts != nil {
		a.Time = time.Unix(ts.GetSeconds(), int64(ts.GetNanos())).UTC()
	} else {
		a.Time = time.Unix(0, 0).UTC()
	}
	if c := r.GetCursor(); c != nil {
		a.Cursor = &Cursor{Epoch: c.GetEpoch(), Sequence: c.GetSequence()}
	}
	return a, nil
}

// jsonAlert fixes the key order of the alert JSON (that of Alert.to_json_dict in rules/alert.py).
type jsonAlert struct {
	Time         string                     `json:"time"`
	Rule         string                     `json:"rule"`
	Priority     string                     `json:"priority"`
	Source       string                     `json:"source"`
	Hostname     string                     `json:"hostname"`
	Output       string                     `json:"output"`
	OutputFields map[string]json.RawMessage `json:"output_fields"`
	Tags         []string                   `json:"tags"`
	Cursor       *Cursor                    `json:"cursor,omitempty"`
}

// FormatTime is RFC 3339 in UTC with exactly nine fraction digits, as Falco prints `time`.
func FormatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000000Z") }

// MarshalJSON writes the alert JSON (docs/alert-json.md).
func (a *Alert) MarshalJSON() ([]byte, error) {
	tags := a.Tags
	if tags == nil {
		tags = []string{}
	}
	fields := a.OutputFields
	if fields == nil {
		fields = map[string]json.RawMessage{}
	}
	return marshalNoEscape(jsonAlert{
		Time: FormatTime(a.Time), Rule: a.Rule, Priority: PriorityName(a.Priority), Source: a.Source,
		Hostname: a.Hostname, Output: a.Output, OutputFields: fields, Tags: tags, Cursor: a.Cursor,
	})
}

// marshalNoEscape is json.Marshal without HTML escaping: outputs contain <, > and & verbatim.
func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
