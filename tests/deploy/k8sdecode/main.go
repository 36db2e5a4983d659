// Command k8sdecode reads the documents `helm template` renders (YAML, "---"-separated) on stdin and decodes
// each strictly into the Kubernetes API type its apiVersion and kind name, from the pinned k8s.io/api module,
// the way the API server decodes (sigs.k8s.io/json: case-sensitive names): an unknown or misspelt field, a
// wrong case, a value of the wrong type, a duplicate key or a kind the pinned version does not have is an error
// naming the document. Kinds of the custom resources the chart may render (Prometheus
// operator, cert-manager) are not in k8s.io/api; they are listed as skipped, and the Python tests check them.
// It prints one line per document ("ok KIND NAME", "skip KIND NAME") and exits 1 after the first error.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The core kinds the chart renders, by "apiVersion/kind"; each decodes into a fresh value of its type.
var kinds = map[string]func() any{
	"apps/v1/DaemonSet":                        func() any { return &appsv1.DaemonSet{} },
	"apps/v1/Deployment":                       func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                      func() any { return &appsv1.StatefulSet{} },
	"v1/Service":                               func() any { return &corev1.Service{} },
	"v1/ConfigMap":                             func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                                func() any { return &corev1.Secret{} },
	"v1/ServiceAccount":                        func() any { return &corev1.ServiceAccount{} },
	"batch/v1/Job":                             func() any { return &batchv1.Job{} },
	"rbac.authorization.k8s.io/v1/Role":        func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding": func() any { return &rbacv1.RoleBinding{} },
	"policy/v1/PodDisruptionBudget":            func() any { return &policyv1.PodDisruptionBudget{} },
}

// API groups of custom resources: not in k8s.io/api, so not decoded here.
var crdGroups = []string{"monitoring.coreos.com/", "cert-manager.io/"}

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func documents(r io.Reader) ([][]byte, error) {
	var docs [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	flush := func() {
		if len(bytes.TrimSpace(cur.Bytes())) > 0 {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
		}
		cur.Reset()
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimRight(line, " ") == "---" {
			flush()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs, sc.Err()
}

// onlyComments: a document of comments alone (helm writes "# Source: ..." before each template's output).
func onlyComments(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}

func decode(doc []byte) (string, error) {
	var h header
	if err := yaml.Unmarshal(doc, &h); err != nil {
		return "", fmt.Errorf("not YAML: %w", err)
	}
	what := fmt.Sprintf("%s %s", h.Kind, h.Metadata.Name)
	if h.APIVersion == "" || h.Kind == "" {
		return what, fmt.Errorf("%s: apiVersion and kind are required", what)
	}
	for _, g := range crdGroups {
		if strings.HasPrefix(h.APIVersion, g) {
			return "skip " + what, nil
		}
	}
	newObj, ok := kinds[h.APIVersion+"/"+h.Kind]
	if !ok {
		return what, fmt.Errorf("%s: %s %s is not a kind this decoder knows (a typo, or a kind to add to kinds)",
			what, h.APIVersion, h.Kind)
	}
	// As the API server reads a request: field names matched case-sensitively (encoding/json would take
	// "hostPId" for hostPID), unknown and duplicate fields reported.
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return what, fmt.Errorf("%s: %w", what, err)
	}
	strict, err := kjson.UnmarshalStrict(js, newObj(), kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return what, fmt.Errorf("%s: %w", what, err)
	}
	if len(strict) > 0 {
		return what, fmt.Errorf("%s: %v", what, errors.Join(strict...))
	}
	return "ok " + what, nil
}

func main() {
	docs, err := documents(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading stdin:", err)
		os.Exit(2)
	}
	n := 0
	for _, doc := range docs {
		if onlyComments(doc) {
			continue
		}
		line, err := decode(doc)
		if err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		fmt.Println(line)
		n++
	}
	if n == 0 {
		fmt.Fprintln(os.Stderr, "error: no documents on stdin")
		os.Exit(1)
	}
}
