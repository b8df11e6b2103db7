package stream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tapes-go/tapes/registry"
)

func TestOneJSONDocumentPerLine(t *testing.T) {
	r := registry.New()
	c := r.Counter("jobs.done")
	r.Gauge("queue.depth", nil).Set(1.5)
	var out bytes.Buffer
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 123000000, time.FixedZone("X", 3600))
	rep := &Reporter{Registry: r, Writer: &out, Now: func() time.Time { return t0 }}
	for i := 0; i < 3; i++ {
		c.Inc()
		if err := rep.Report(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	sc := bufio.NewScanner(&out)
	n := 0
	for sc.Scan() {
		n++
		var doc struct {
			Timestamp time.Time
			Stats     struct {
				Jobs  struct{ Done struct{ Value int64 } }
				Queue struct{ Depth struct{ Value float64 } }
			}
		}
		if err := json.Unmarshal(sc.Bytes(), &doc); err != nil {
			t.Fatalf("line %d %q: %v", n, sc.Text(), err)
		}
		if !doc.Timestamp.Equal(t0) || !strings.Contains(sc.Text(), `"timestamp":"2026-11-25T09:00:00.123Z"`) {
			t.Fatalf("line %d timestamp: %s", n, sc.Text())
		}
		if doc.Stats.Jobs.Done.Value != int64(n) || doc.Stats.Queue.Depth.Value != 1.5 {
			t.Fatalf("line %d stats: %s", n, sc.Text())
		}
	}
	if n != 3 {
		t.Fatalf("%d lines, want 3", n)
	}
}

type brokenWriter struct{}

func (brokenWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestWriteErrorIsReturned(t *testing.T) {
	rep := New(registry.New(), brokenWriter{})
	if err := rep.Report(context.Background()); err == nil || !strings.Contains(err.Error(), "broken pipe") {
		t.Fatalf("Report = %v, want the writer's error", err)
	}
}

// TestZeroValueWritesDefaultRegistryToStdout runs itself in a child process
// and reads its real standard output.
func TestZeroValueWritesDefaultRegistryToStdout(t *testing.T) {
	if os.Getenv("STREAM_CHILD") == "1" {
		registry.Default.Counter("stream.child.hits").Add(9)
		var rep Reporter
		if err := rep.Report(context.Background()); err != nil {
			os.Exit(3)
		}
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestZeroValueWritesDefaultRegistryToStdout$")
	cmd.Env = append(os.Environ(), "STREAM_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !bytes.HasPrefix(out, []byte(`{"timestamp":"`)) || !bytes.Contains(out, []byte(`"stream":{"child":{"hits":{"value":9}}}`)) {
		t.Fatalf("stdout of the child: %s", out)
	}
}
