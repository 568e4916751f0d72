package coalesce

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

func TestGate(t *testing.T) {
	var g Gate[string]
	body := bytes.Repeat([]byte("abcdefgh"), 125) // 1000 bytes: five sampled windows
	lead, wait := g.Enter("ws/target", body)
	if lead == nil || wait || g.InFlight() != 1 {
		t.Fatalf("first caller: lead %v wait %v in flight %d", lead, wait, g.InFlight())
	}

	// An identical body in the same scope waits for the lead; an equal copy counts (bodies are
	// compared, not pointers).
	twin, wait := g.Enter("ws/target", append([]byte(nil), body...))
	if twin != lead || !wait {
		t.Fatalf("identical call did not wait: %v %v", twin, wait)
	}
	// Another scope is another call.
	if other, wait := g.Enter("ws2/target", body); other == nil || other == lead || wait {
		t.Fatalf("another scope joined: %v %v", other, wait)
	}
	// A body that differs outside the sampled windows has the lead's fingerprint but is not
	// identical: it calls on its own, unregistered.
	near := append([]byte(nil), body...)
	near[100] = 'X'
	if l, wait := g.Enter("ws/target", near); l != nil || wait {
		t.Fatalf("a fingerprint twin with other bytes joined: %v %v", l, wait)
	}

	g.Finish(lead, "answer", nil)
	if v, ok, err := twin.Wait(context.Background()); v != "answer" || !ok || err != nil {
		t.Fatalf("waiter got %q %v %v", v, ok, err)
	}
	if g.InFlight() != 1 { // the other scope's lead
		t.Fatalf("in flight %d", g.InFlight())
	}

	// A lead that found no twin needs no channel; one whose caller left sends its waiters
	// upstream themselves.
	lead, _ = g.Enter("ws/target", body)
	twin, _ = g.Enter("ws/target", body)
	g.Finish(lead, "", ErrLeadGone)
	if _, ok, err := twin.Wait(context.Background()); ok || err != nil {
		t.Fatalf("waiter of a departed lead: ok %v err %v", ok, err)
	}

	// Errors are shared like answers; a waiter whose own context ends stops waiting.
	lead, _ = g.Enter("ws/target", body)
	twin, _ = g.Enter("ws/target", body)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok, err := twin.Wait(ctx); !ok || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v %v", ok, err)
	}
	boom := errors.New("upstream failed")
	g.Finish(lead, "", boom)
	if _, ok, err := twin.Wait(context.Background()); !ok || err != boom {
		t.Fatalf("shared error: %v %v", ok, err)
	}
}

// BenchmarkGateNoTwin is the whole cost for a request with nothing identical in flight.
func BenchmarkGateNoTwin(b *testing.B) {
	var g Gate[int]
	body := bytes.Repeat([]byte("x"), 400<<10)
	b.ReportAllocs()
	for b.Loop() {
		l, _ := g.Enter("ws/target", body)
		g.Finish(l, 0, nil)
	}
}
