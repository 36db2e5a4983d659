package falconet

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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

// FromProto decodes a response. It accepts any message the wire can carry (a field marked JSON that does not
// hold a finite JSON scalar is kept as a string), so one odd alert never ends a subscription; the error
// result is kept for compatibility and is always nil.
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
			if err := json.Unmarshal(raw, &scalar); err == nil {
				switch scalar.(type) {
				case nil, float64, bool:
					fields[k] = raw
					continue
				}
			}
			// Not a finite JSON scalar (NaN, 1e400, an object, not JSON at all): a client must survive any
			// alert the wire can carry, so the value is kept as the string it is.
		}
		fields[k] = appendJSONString(nil, v)
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

// FormatTime is RFC 3339 in UTC with exactly nine fraction digits, as Falco prints `time`.
func FormatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000000Z") }

// MarshalJSON writes the alert JSON (docs/alert-json.md) in its canonical one-line form: keys in the order of
// the document, output_fields sorted by key, non-ASCII and <, >, & written as they are.
func (a *Alert) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 256+len(a.Output))
	b = append(b, `{"time":`...)
	b = appendJSONString(b, FormatTime(a.Time))
	for _, kv := range [...][2]string{
		{"rule", a.Rule}, {"priority", PriorityName(a.Priority)}, {"source", a.Source},
		{"hostname", a.Hostname}, {"output", a.Output},
	} {
		b = append(b, ',', '"')
		b = append(b, kv[0]...)
		b = append(b, '"', ':')
		b = appendJSONString(b, kv[1])
	}
	b = append(b, `,"output_fields":{`...)
	keys := make([]string, 0, len(a.OutputFields))
	for k := range a.OutputFields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = append(b, a.OutputFields[k]...)
	}
	b = append(b, `},"tags":[`...)
	for i, t := range a.Tags {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, t)
	}
	b = append(b, ']')
	if a.Cursor != nil {
		b = append(b, `,"cursor":{"epoch":`...)
		b = appendJSONString(b, a.Cursor.Epoch)
		b = append(b, `,"sequence":`...)
		b = strconv.AppendUint(b, a.Cursor.Sequence, 10)
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// appendJSONString writes s as a JSON string the way the Python SDK's canonical line does (json.dumps with
// ensure_ascii=False, then falconet.model.text.json_safe): '"', '\\' and C0 controls are escaped as JSON
// requires, and so are DEL, the C1 controls, U+2028/U+2029 and the bidi overrides, which JSON would leave raw
// for a terminal to interpret. (encoding/json would also escape <, >, &.)
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x80 {
			r, size := utf8.DecodeRuneInString(s[i:])
			if needsEscape(r) {
				b = append(b, s[start:i]...)
				b = append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
				start = i + size
			}
			i += size
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// needsEscape: the non-ASCII characters json_safe escapes (C1 controls, line separators, bidi controls).
func needsEscape(r rune) bool {
	return (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}
