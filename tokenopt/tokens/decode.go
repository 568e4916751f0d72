package tokens

import (
	"bytes"
	"encoding/json"
)

// decodeString decodes a quoted JSON string, without the decoder when it has no escapes.
func decodeString(q []byte) (string, bool) {
	if len(q) < 2 {
		return "", false
	}
	inner := q[1 : len(q)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), true
	}
	var s string
	if json.Unmarshal(q, &s) != nil {
		return "", false
	}
	return s, true
}
