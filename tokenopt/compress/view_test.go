package compress

import (
	"bytes"
	"testing"

	"github.com/badtheorylabs/btl-runtime/tokenopt/conv"
)

// TestCompressViewWritesWhatCompressWrites runs every golden body and option set through
// CompressView on the body's view, alone and after an earlier stage's replacements (the
// newest user message shortened, the array compacted, as dedupe does), and checks that the
// one copy Rewrite makes is byte for byte what Compress writes on the body that the earlier
// stage would have written, with the same report.
func TestCompressViewWritesWhatCompressWrites(t *testing.T) {
	n := 0
	for _, gb := range goldenBodies(t) {
		v, err := conv.Parse(gb.body)
		if err != nil {
			continue // Compress's own error paths are the golden test's
		}
		pres := []conv.Change{conv.None()}
		for i := len(v.Msgs) - 1; i >= 0; i-- {
			if v.Msgs[i].Role == "user" {
				pre := conv.None()
				pre.Repl, pre.Compact = map[int][]byte{i: []byte(`{"role":"user","content":"(shortened by an earlier stage)"}`)}, true
				pres = append(pres, pre)
				break
			}
		}
		for _, pre := range pres {
			before, _ := v.Rewrite(pre, true)
			for _, g := range goldenOptions() {
				want, wantRep, wantErr := Compress(before, g.o)
				c, rep, err := CompressView(v, pre, g.o)
				if (err != nil) != (wantErr != nil) || rep != wantRep {
					t.Fatalf("%s/%s (pre %v): report %+v err %v, want %+v err %v", gb.name, g.name, pre.Repl != nil, rep, err, wantRep, wantErr)
				}
				got, nv := v.Rewrite(c, true)
				if !bytes.Equal(got, want) {
					t.Fatalf("%s/%s (pre %v): bodies differ\n got %s\nwant %s", gb.name, g.name, pre.Repl != nil, got, want)
				}
				if nv == nil || !nv.Of(got) {
					t.Fatalf("%s/%s: no view of the written body", gb.name, g.name)
				}
				n++
			}
		}
	}
	if n < 100 {
		t.Fatalf("only %d cases ran", n)
	}
}
