package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad push settings are refused at start like every other setting: exit 2,
// one line naming the flag, nothing created.
func TestInvalidPushSettings(t *testing.T) {
	shmPath := filepath.Join(t.TempDir(), "p.shm")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-remote-write-url", "prom:9090/api/v1/write"}, `-remote-write-url "prom:9090/api/v1/write": want an http:// or https:// URL with a host`},
		{[]string{"-otlp-url", "ftp://c/v1/metrics"}, `-otlp-url "ftp://c/v1/metrics": want an http:// or https:// URL with a host`},
		{[]string{"-otlp-url", "http:///v1/metrics"}, `-otlp-url "http:///v1/metrics": want an http:// or https:// URL with a host`},
		{[]string{"-remote-write-url", "http://a b"}, `-remote-write-url "http://a b": invalid character " " in host name`},
		{[]string{"-push-timeout", "0s"}, "-push-timeout 0s: must be positive"},
		{[]string{"-push-queue", "0"}, "-push-queue 0: must be at least 1"},
		{[]string{"-push-attempts", "0"}, "-push-attempts 0: must be at least 1"},
		{[]string{"-push-label", "region"}, `invalid value "region" for flag -push-label: "region": want name=value`},
		{[]string{"-push-label", "__name__=x"}, `label name "__name__": want [a-zA-Z_][a-zA-Z0-9_]*, not starting with __`},
		{[]string{"-otlp-service-name", ""}, "-otlp-service-name: must not be empty"},
	} {
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		code := mainCode(ctx, append([]string{"-shm", shmPath}, tc.args...), &stdout, &stderr)
		if _, err := os.Stat(shmPath); err == nil {
			t.Errorf("%q: the shm file was created", tc.args)
			os.Remove(shmPath)
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
			t.Errorf("%q: exit %d, stderr %q, want 2 and one line containing %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}

func TestPushLabels(t *testing.T) {
	var l labelList
	for _, v := range []string{"a=1", "b=", "a=2"} {
		if err := l.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	if l.String() != "a=2,b=" {
		t.Errorf("labels %s, want a=2,b= (a later value replaces an earlier one)", l.String())
	}
}
