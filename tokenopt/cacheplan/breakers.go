package cacheplan

import "strconv"

// Breaker kinds.
const (
	KindTimestamp = "timestamp"
	KindDate      = "date"
	KindTime      = "time"
	KindUUID      = "uuid"
	KindRequestID = "request_id"
	KindEpoch     = "epoch"
)

// ScanLimit is how many bytes at the top of each system message and tool description are
// scanned for cache breakers.
const ScanLimit = 8192

// Finding is one piece of volatile content near the top of the prompt.
type Finding struct {
	Kind string
	// Where is "system[i]" (i is the index in messages) or "tools[i]" (the description).
	Where string
	// Offset is the byte offset inside the JSON-encoded string value.
	Offset int
}

// String renders the finding for the response header, e.g. "timestamp@system[0]:212".
func (f Finding) String() string { return f.Kind + "@" + f.Where + ":" + strconv.Itoa(f.Offset) }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isHex(c byte) bool {
	return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
func isAlnum(c byte) bool { return isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'z') }

func digitsAt(s []byte, i, n int) bool {
	if i < 0 || i+n > len(s) {
		return false
	}
	for k := i; k < i+n; k++ {
		if !isDigit(s[k]) {
			return false
		}
	}
	return true
}

func hexAt(s []byte, i, n int) bool {
	if i+n > len(s) {
		return false
	}
	for k := i; k < i+n; k++ {
		if !isHex(s[k]) {
			return false
		}
	}
	return true
}

func isUUID(s []byte, i int) bool {
	return hexAt(s, i, 8) && i+36 <= len(s) && s[i+8] == '-' && hexAt(s, i+9, 4) && s[i+13] == '-' &&
		hexAt(s, i+14, 4) && s[i+18] == '-' && hexAt(s, i+19, 4) && s[i+23] == '-' && hexAt(s, i+24, 12) &&
		(i+36 == len(s) || !isAlnum(s[i+36]))
}

// scan appends the volatile tokens found in s (a JSON string's raw bytes, quotes excluded,
// truncated to ScanLimit) to out; they are at prefix[idx].
func scan(s []byte, prefix string, idx int, out []Finding) []Finding {
	if len(s) > ScanLimit {
		s = s[:ScanLimit]
	}
	where := "" // rendered at the first finding: most strings have none
	add := func(kind string, at int) {
		if where == "" {
			where = indexed(prefix, idx)
		}
		out = append(out, Finding{Kind: kind, Where: where, Offset: at + 1})
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c == '\\' { // an escape: skip it so "\n2024" is not read as one word
			if i+1 < len(s) && s[i+1] == 'u' {
				i += 6
			} else {
				i += 2
			}
			continue
		}
		if !isAlnum(c) {
			i++
			continue
		}
		j := i
		digits, letters := 0, 0
		hex := true
		for j < len(s) && isAlnum(s[j]) {
			if isDigit(s[j]) {
				digits++
			} else {
				letters++
				if !isHex(s[j]) {
					hex = false
				}
			}
			j++
		}
		n := j - i
		switch {
		case isUUID(s, i):
			add(KindUUID, i)
			j = i + 36
		case letters == 0 && n == 4 && j+6 <= len(s) && (s[j] == '-' || s[j] == '/') && digitsAt(s, j+1, 2) &&
			s[j+3] == s[j] && digitsAt(s, j+4, 2) && (j+6 == len(s) || !isDigit(s[j+6])):
			// YYYY-MM-DD, optionally followed by a time.
			e := j + 6
			if e+6 <= len(s) && (s[e] == 'T' || s[e] == ' ') && digitsAt(s, e+1, 2) && s[e+3] == ':' && digitsAt(s, e+4, 2) {
				add(KindTimestamp, i)
				j = e + 6
			} else {
				add(KindDate, i)
				j = e
			}
		case letters == 0 && n <= 2 && j+3 <= len(s) && s[j] == '/' && isDigit(s[j+1]):
			// M/D/YY(YY) or D/M/YYYY
			k := j + 1
			for k < len(s) && isDigit(s[k]) && k-j <= 2 {
				k++
			}
			if k < len(s) && s[k] == '/' && digitsAt(s, k+1, 2) {
				add(KindDate, i)
				j = k + 3
				for j < len(s) && isDigit(s[j]) {
					j++
				}
			}
		case letters == 0 && n <= 2 && j+3 <= len(s) && s[j] == ':' && digitsAt(s, j+1, 2) && (j+3 == len(s) || !isDigit(s[j+3])):
			add(KindTime, i)
			j += 3
		case letters == 0 && (n == 10 || n == 13) && s[i] == '1' && s[i+1] >= '5':
			add(KindEpoch, i)
		case n >= 16 && hex && digits >= 2 && letters >= 2:
			add(KindRequestID, i)
		case n >= 20 && digits >= 3 && letters >= 3:
			add(KindRequestID, i)
		}
		i = j
	}
	return out
}
