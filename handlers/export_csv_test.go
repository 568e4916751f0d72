package handlers

import "testing"

func TestCSVTextNeutralisesFormulas(t *testing.T) {
	for in, want := range map[string]string{
		`=HYPERLINK("http://evil","x")`: `'=HYPERLINK("http://evil","x")`,
		"+1+1":                          "'+1+1",
		"-2+3":                          "'-2+3",
		"@SUM(A1)":                      "'@SUM(A1)",
		"\t=1":                          "'\t=1",
		"\r=1":                          "'\r=1",
		"btl-fast":                      "btl-fast",
		"a=b":                           "a=b",
		"":                              "",
	} {
		if got := csvText(in); got != want {
			t.Errorf("csvText(%q) = %q, want %q", in, got, want)
		}
	}
}
