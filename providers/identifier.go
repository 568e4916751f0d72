package providers

import (
	"net/http"
	"unicode"
	"unicode/utf8"
)

// MaxIdentifierBytes bounds identifiers the gateway stores and echoes (model names, key names).
const MaxIdentifierBytes = 256

// CheckIdentifier refuses an identifier that will be stored, logged and exported unless it is
// printable text: no control characters (CR/LF would forge lines in logs and CSV exports), no
// invalid UTF-8, at most MaxIdentifierBytes. param names the field in the 400.
func CheckIdentifier(param, v string) *Error {
	if len(v) > MaxIdentifierBytes {
		return Errorf(http.StatusBadRequest, "invalid_value", param, "%s must be at most %d bytes", param, MaxIdentifierBytes)
	}
	for i := 0; i < len(v); {
		c := v[i]
		if c >= 0x20 && c < 0x7f {
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(v[i:])
		if (r == utf8.RuneError && size <= 1) || !unicode.IsPrint(r) {
			return Errorf(http.StatusBadRequest, "invalid_value", param,
				"%s may contain only printable characters (no control characters, line breaks or invalid UTF-8)", param)
		}
		i += size
	}
	return nil
}
