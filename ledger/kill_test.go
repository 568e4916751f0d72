package ledger

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// downStore is a database that is never reachable.
type downStore struct{ Store }

func (downStore) InsertRows(context.Context, string, []Row) error { return errors.New("down") }

// TestWriterSurvivesKill appends rows in a child process that then SIGKILLs itself (no
// fsync, no Close), and checks every row reaches the store exactly once from the spool.
func TestWriterSurvivesKill(t *testing.T) {
	const n = 2000
	if dir := os.Getenv("BTL_SPOOL_CHILD_DIR"); dir != "" {
		w, err := NewWriter(downStore{}, WriterOptions{Dir: dir, NodeID: "n1", FsyncInterval: time.Hour})
		if err != nil {
			os.Exit(3)
		}
		for i := range n {
			if err := w.Append(testRow(os.Getenv("BTL_SPOOL_CHILD_WS"), i, 1)); err != nil {
				os.Exit(4)
			}
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	s := newSQLiteStore(t)
	ws := mustWorkspace(t, s, Credit)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriterSurvivesKill$")
	cmd.Env = append(os.Environ(), "BTL_SPOOL_CHILD_DIR="+dir, "BTL_SPOOL_CHILD_WS="+ws.ID)
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v", err)
	}
	w, err := NewWriter(s, WriterOptions{Dir: dir, NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got, cost := countRows(t, s, ws.ID); got != n || cost != n {
		t.Fatalf("rows %d cost %v after kill -9; want %s", got, cost, strconv.Itoa(n))
	}
}
