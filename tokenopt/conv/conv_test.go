package conv

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
)

// sameView fails unless got describes body exactly as a fresh Parse of it does.
func sameView(t *testing.T, got *View) {
	t.Helper()
	want, err := Parse(got.Body)
	if err != nil {
		t.Fatalf("rewritten body does not parse: %v\n%s", err, got.Body)
	}
	if got.Arr != want.Arr || got.Reserve != want.Reserve {
		t.Fatalf("array or reserve spans: got %v %v, want %v %v", got.Arr, got.Reserve, want.Arr, want.Reserve)
	}
	if len(got.Msgs) != len(want.Msgs) || len(got.Top) != len(want.Top) {
		t.Fatalf("got %d messages and %d members, want %d and %d", len(got.Msgs), len(got.Top), len(want.Msgs), len(want.Top))
	}
	for i, m := range got.Msgs {
		w := want.Msgs[i]
		if !bytes.Equal(m.Raw, w.Raw) || m.Pos != w.Pos || m.Role != w.Role || m.Content != w.Content || m.ToolCallID != w.ToolCallID || m.ToolCalls != w.ToolCalls {
			t.Fatalf("message %d: got %+v, want %+v", i, m, w)
		}
		if &m.Raw[0] != &got.Body[got.Arr.Start+m.Pos.Start] {
			t.Fatalf("message %d does not alias the body", i)
		}
	}
	for i, m := range got.Top {
		if !bytes.Equal(m.Key, want.Top[i].Key) || m.Val != want.Top[i].Val {
			t.Fatalf("member %d: got %s %v, want %s %v", i, m.Key, m.Val, want.Top[i].Key, want.Top[i].Val)
		}
	}
}

func TestRewriteWritesOnceAndKeepsTheView(t *testing.T) {
	bodies := []string{
		`{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}],"max_tokens":5}`,
		// Python's json.dumps: a space after every separator.
		`{"max_tokens": null, "messages": [ {"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"} ] , "model": "m", "max_completion_tokens": 7}`,
		// A duplicated messages member: the last one counts.
		`{"messages":[{"role":"user","content":"x"}],"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}],"stop":null}`,
	}
	changes := []struct {
		name   string
		c      Change
		expect func(v *View) string // the body the change must give
	}{
		{"none", None(), func(v *View) string { return string(v.Body) }},
		{"replace", Change{Repl: map[int][]byte{1: []byte(`{"role":"user","content":"AAAA"}`), 3: []byte(`{"content":"C","role":"user"}`)}, DelFrom: -1, DelTo: -1},
			func(v *View) string {
				s := string(v.Body)
				s = replaceAt(s, v, 3, `{"content":"C","role":"user"}`)
				return replaceAt(s, v, 1, `{"role":"user","content":"AAAA"}`)
			}},
		{"compact", Change{Repl: map[int][]byte{3: []byte(`{"role":"user","content":"z"}`)}, DelFrom: -1, DelTo: -1, Compact: true},
			func(v *View) string {
				return string(v.Body[:v.Arr.Start]) + `[` + string(v.Msgs[0].Raw) + `,` + string(v.Msgs[1].Raw) + `,` + string(v.Msgs[2].Raw) + `,{"role":"user","content":"z"}]` + string(v.Body[v.Arr.End:])
			}},
		{"trim", Change{DelFrom: 1, DelTo: 3, Marker: []byte(`{"role":"system","content":"[gateway: 2]"}`)},
			func(v *View) string {
				a := v.Body[v.Arr.Start:v.Arr.End]
				return string(v.Body[:v.Arr.Start]) + string(a[:v.Msgs[1].Pos.Start]) + `{"role":"system","content":"[gateway: 2]"},` + string(a[v.Msgs[3].Pos.Start:]) + string(v.Body[v.Arr.End:])
			}},
		{"trim and replace", Change{Repl: map[int][]byte{0: []byte(`{"role":"system","content":"[gateway: 9]"}`), 2: []byte(`{"role":"assistant","content":"gone"}`)}, DelFrom: 1, DelTo: 3},
			func(v *View) string {
				a := v.Body[v.Arr.Start:v.Arr.End]
				return string(v.Body[:v.Arr.Start]) + string(a[:v.Msgs[0].Pos.Start]) + `{"role":"system","content":"[gateway: 9]"}` + string(a[v.Msgs[0].Pos.End:v.Msgs[1].Pos.Start]) + string(a[v.Msgs[3].Pos.Start:]) + string(v.Body[v.Arr.End:])
			}},
	}
	for _, b := range bodies {
		for _, tc := range changes {
			v, err := Parse([]byte(b))
			if err != nil {
				t.Fatal(err)
			}
			want := tc.expect(v)
			if n := v.Len(tc.c); n != len(want) {
				t.Errorf("%s: Len %d, want %d", tc.name, n, len(want))
			}
			body, nv := v.Rewrite(tc.c, true)
			if string(body) != want {
				t.Fatalf("%s on %s:\n got %s\nwant %s", tc.name, b, body, want)
			}
			if nv == nil {
				t.Fatalf("%s: no view", tc.name)
			}
			if !nv.Of(body) {
				t.Fatalf("%s: the view is not of the body returned", tc.name)
			}
			sameView(t, nv)
			// Without the messages: the same body and top level.
			v2, _ := Parse([]byte(b))
			body2, top := v2.Rewrite(tc.c, false)
			v2.Release()
			if string(body2) != want || top.Arr != nv.Arr || top.Reserve != nv.Reserve || len(top.Top) != len(nv.Top) || (top.Msgs != nil && !tc.c.Empty()) {
				t.Fatalf("%s: the top-level rewrite differs", tc.name)
			}
			for i, m := range top.Top {
				if string(m.Key) != string(nv.Top[i].Key) || m.Val != nv.Top[i].Val {
					t.Fatalf("%s: member %d differs", tc.name, i)
				}
			}
			if !tc.c.Empty() && &body[0] == &v.Body[0] {
				t.Fatalf("%s: the input was written over", tc.name)
			}
			// Into a caller's buffer, after what it holds: the same body and top level.
			v3, _ := Parse([]byte(b))
			dst := append(make([]byte, 0, 8), "prefix"...)
			buf, top3 := v3.RewriteAppend(dst, tc.c)
			if string(buf) != want || string(buf[:cap(buf)][:0]) != "" || string(dst) != "prefix" || string(top3.Body) != want || top3.Arr != nv.Arr || len(top3.Top) != len(nv.Top) {
				t.Fatalf("%s: RewriteAppend gave %s", tc.name, buf)
			}
			for i, m := range top3.Top {
				if string(m.Key) != string(nv.Top[i].Key) || m.Val != nv.Top[i].Val {
					t.Fatalf("%s: RewriteAppend's member %d differs", tc.name, i)
				}
			}
			sameEditsAsApply(t, v3, tc.c, tc.name)
		}
	}
}

// sameEditsAsApply checks that RewriteWith writes what Apply writes on Rewrite's body, for
// edits at every position (each boundary between the runs a rewrite is written in included)
// and for random sets of them.
func sameEditsAsApply(t *testing.T, v *View, c Change, name string) {
	t.Helper()
	body, _ := v.Rewrite(c, false)
	n := len(body)
	check := func(edits []Edit) {
		t.Helper()
		want := Apply(body, slices.Clone(edits))
		if got := v.RewriteWith(c, slices.Clone(edits)); !bytes.Equal(got, want) {
			t.Fatalf("%s with edits %+v:\n got %s\nwant %s", name, edits, got, want)
		}
	}
	check(nil)
	for p := 0; p <= n; p++ {
		check([]Edit{{Start: p, End: p, Repl: []byte("<ins>")}})
		for _, k := range []int{1, 7, 40} {
			if p+k <= n {
				check([]Edit{{Start: p, End: p + k, Repl: []byte("<rep>")}})
				check([]Edit{{Start: p, End: p + k}})
			}
		}
	}
	r := rand.New(rand.NewPCG(uint64(n), 7))
	for range 300 {
		var edits []Edit
		for at := r.IntN(n + 1); at <= n && len(edits) < 6; {
			end := min(at+r.IntN(12), n)
			if r.IntN(3) == 0 {
				end = at // an insertion
			}
			edits = append(edits, Edit{Start: at, End: end, Repl: []byte("<" + string(rune('a'+len(edits))) + ">")})
			at = end + r.IntN(30)
		}
		// In any order, but edits at one position keep theirs (an insertion before the
		// edit that starts where it is).
		order := map[int]int{}
		for _, e := range edits {
			order[e.Start] = r.IntN(1000)
		}
		slices.SortStableFunc(edits, func(a, b Edit) int { return order[a.Start] - order[b.Start] })
		check(edits)
	}
}

func replaceAt(s string, v *View, i int, repl string) string {
	at := v.Arr.Start + v.Msgs[i].Pos.Start
	return s[:at] + repl + s[v.Arr.Start+v.Msgs[i].Pos.End:]
}

func TestRewriteOfAReplacementThatIsNotAMessage(t *testing.T) {
	v, err := Parse([]byte(`{"messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, nv := v.Rewrite(Change{Repl: map[int][]byte{1: []byte(`"text"`)}, DelFrom: -1, DelTo: -1}, true)
	if string(body) != `{"messages":[{"role":"user","content":"a"},"text"]}` || nv != nil {
		t.Fatalf("got %s and view %v; want the body written and no view", body, nv)
	}
}

func TestParseRefusesWhatItCannotView(t *testing.T) {
	for _, b := range []string{``, `[]`, `{"model":"m"}`, `{"messages":["hi"]}`, `{"messages":[{"role":"user"}],}`} {
		if _, err := Parse([]byte(b)); err == nil {
			t.Errorf("Parse(%s) succeeded", b)
		}
	}
}

func TestApplyOrdersEditsAtOnePositionAsGiven(t *testing.T) {
	body := []byte(`{"a":1,"b":null}`)
	got := Apply(body, []Edit{{Start: 11, End: 15, Repl: []byte(`2`)}, {Start: 1, End: 1, Repl: []byte(`"x":0,`)}, {Start: 1, End: 1, Repl: []byte(`"y":0,`)}})
	if string(got) != `{"x":0,"y":0,"a":1,"b":2}` {
		t.Fatalf("got %s", got)
	}
	if string(body) != `{"a":1,"b":null}` {
		t.Fatalf("the input changed: %s", body)
	}
}
