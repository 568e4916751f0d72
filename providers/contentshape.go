package providers

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// Content shapes. The gateway forwards the caller's messages as bytes, so a shape the upstream
// would reject (a content that is an object, a part with no known type) used to reach it, and
// translating adapters would guess at it. checkMessages refuses such shapes with a 400 naming
// the parameter, in the same pass that finds references to provider-side storage. It runs on
// every request: parameter names are built only for the error.

// checkMessages validates the shape of every message in messages (a JSON array, already known
// to be valid JSON) and returns how many there are and the provider-side references found:
// image URLs for which ProviderRef holds, and file ids.
func checkMessages(messages []byte) (n int, refs []string, bad *Error) {
	// One walk: each message's members are visited while finding where it ends, so the
	// content is scanned once here, not once to skip the message and again to read it.
	i := skipSpace(messages, 1)
	for i < len(messages) && messages[i] != ']' {
		var end int
		if messages[i] != '{' {
			return n, refs, shapeError("invalid_type", msgParam(n, ""), "must be an object")
		}
		hasRole := false
		var err error
		end, err = eachMember(messages, i, func(quoted, raw []byte) bool {
			hasRole = hasRole || keyFold(quoted, "role")
			refs, bad = checkMember(quoted, raw, n, refs)
			return bad == nil
		})
		if bad != nil {
			return n, refs, bad
		}
		if err != nil {
			return n, refs, Errorf(http.StatusBadRequest, "invalid_type", "messages", "'messages' must be an array of message objects")
		}
		if !hasRole {
			return n, refs, shapeError("missing_required_parameter", msgParam(n, ".role"), "is required")
		}
		n++
		i = skipSpace(messages, end)
		if i < len(messages) && messages[i] == ',' {
			i = skipSpace(messages, i+1)
		}
	}
	return n, refs, nil
}

// eachMember calls fn with each member of the object starting at doc[i] (valid JSON) and
// returns the index just past the object.
func eachMember(doc []byte, i int, fn func(quotedKey, value []byte) bool) (int, error) {
	i = skipSpace(doc, i+1)
	for i < len(doc) && doc[i] == '"' {
		ke, err := skipString(doc, i)
		if err != nil {
			return 0, err
		}
		vs := skipSpace(doc, skipSpace(doc, ke)+1) // past the colon
		ve, err := skipValue(doc, vs)
		if err != nil {
			return 0, err
		}
		if !fn(doc[i:ke], doc[vs:ve]) {
			return ve, nil
		}
		i = skipSpace(doc, ve)
		if i < len(doc) && doc[i] == ',' {
			i = skipSpace(doc, i+1)
		}
	}
	if i >= len(doc) || doc[i] != '}' {
		return 0, errBadJSON
	}
	return i + 1, nil
}

// checkMember checks one member of message i.
func checkMember(quoted, raw []byte, i int, refs []string) ([]string, *Error) {
	switch {
	case keyFold(quoted, "role"):
		if len(raw) < 2 || raw[0] != '"' {
			return refs, shapeError("invalid_type", msgParam(i, ".role"), "must be a string")
		}
		if !knownRole(raw) {
			role, _ := jsonString(raw)
			return refs, Errorf(http.StatusBadRequest, "invalid_value", msgParam(i, ".role"),
				"invalid value for %s: %q (expected system, developer, user, assistant or tool)", msgParam(i, ".role"), role)
		}
	case keyFold(quoted, "content"):
		return checkContent(raw, i, refs)
	case keyFold(quoted, "tool_calls"):
		if raw[0] != '[' && raw[0] != 'n' {
			return refs, shapeError("invalid_type", msgParam(i, ".tool_calls"), "must be an array")
		}
	}
	return refs, nil
}

// knownRole reports whether the quoted JSON string is a chat role ("function" is OpenAI's
// deprecated one).
func knownRole(quoted []byte) bool {
	if bytes.IndexByte(quoted, '\\') >= 0 {
		role, _ := jsonString(quoted)
		quoted = []byte(`"` + role + `"`)
	}
	switch string(quoted[1 : len(quoted)-1]) {
	case RoleSystem, RoleDeveloper, RoleUser, RoleAssistant, RoleTool, "function":
		return true
	}
	return false
}

// checkContent accepts a string, null, or an array of strings and typed part objects.
func checkContent(raw []byte, i int, refs []string) ([]string, *Error) {
	switch raw[0] {
	case '"', 'n':
		return refs, nil
	case '[':
	default:
		return refs, shapeError("invalid_type", msgParam(i, ".content"), "must be a string or an array of content parts")
	}
	var bad *Error
	_ = EachElement(raw, func(j int, part []byte) bool {
		switch part[0] {
		case '"':
			return true // some clients send an array of strings
		case '{':
			refs, bad = checkPart(part, i, j, refs)
		default:
			bad = shapeError("invalid_type", partParam(i, j, ""), "must be a content part object")
		}
		return bad == nil
	})
	return refs, bad
}

// checkPart checks one part object: a known type, and the member that type needs.
func checkPart(part []byte, i, j int, refs []string) ([]string, *Error) {
	typ, ok := StringMember(part, "type")
	if !ok {
		return refs, shapeError("missing_required_parameter", partParam(i, j, ".type"), "is required and must be a string")
	}
	member := typ
	switch typ {
	case "input_text", "output_text":
		member = "text"
	case PartText, PartImageURL, PartInputAudio, PartFile, "refusal":
	default:
		return refs, Errorf(http.StatusBadRequest, "invalid_value", partParam(i, j, ".type"),
			"%s: %q is not a known content part type", partParam(i, j, ".type"), typ)
	}
	s, found, _ := FindTopLevel(part, member)
	if !found {
		return refs, shapeError("missing_required_parameter", partParam(i, j, "."+member), "is required for a "+typ+" part")
	}
	v := part[s.Start:s.End]
	switch typ {
	case PartImageURL:
		u, ok := StringMember(v, "url")
		if !ok || u == "" {
			return refs, shapeError("invalid_type", partParam(i, j, ".image_url"), "must be an object with a url string")
		}
		if ProviderRef(u) {
			refs = append(refs, u)
		}
	case PartInputAudio, PartFile:
		if v[0] != '{' {
			return refs, shapeError("invalid_type", partParam(i, j, "."+member), "must be an object")
		}
		if id, ok := StringMember(v, "file_id"); ok && id != "" {
			refs = append(refs, id)
		}
	default: // text and refusal
		if v[0] != '"' {
			return refs, shapeError("invalid_type", partParam(i, j, "."+member), "must be a string")
		}
	}
	return refs, nil
}

func msgParam(i int, rest string) string { return "messages[" + strconv.Itoa(i) + "]" + rest }

func partParam(i, j int, rest string) string {
	return msgParam(i, ".content["+strconv.Itoa(j)+"]"+rest)
}

func shapeError(code, param, what string) *Error {
	return Errorf(http.StatusBadRequest, code, param, "%s %s", param, what)
}

// ProviderRef reports whether an image URL names storage on the provider's side (gs://, s3://,
// any scheme but data: and http(s)) rather than content the caller sent or a URL anyone could
// fetch. The provider resolves such a reference with the operator's identity, so a tenant must
// not pass one unless the operator allowed it. (File ids are references too; checkPart
// collects them as well.)
func ProviderRef(u string) bool {
	return !hasPrefixFold(u, "data:") && !hasPrefixFold(u, "https://") && !hasPrefixFold(u, "http://")
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// keyFold matches a quoted object key against name as encoding/json does: escapes decoded,
// ASCII case folded (canonical parsing decodes with encoding/json, so "Content" is content).
func keyFold(quoted []byte, name string) bool {
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') >= 0 {
		var s string
		if json.Unmarshal(quoted, &s) != nil {
			return false
		}
		inner = []byte(s)
	}
	return len(inner) == len(name) && bytes.EqualFold(inner, []byte(name))
}

// jsonString decodes a JSON string value, without the decoder when it has no escapes.
func jsonString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	var v string
	return v, json.Unmarshal(raw, &v) == nil
}

// StringMember is the decoded string value of a top-level member of obj (false when obj is
// not an object, or the member is absent or not a string).
func StringMember(obj []byte, key string) (string, bool) {
	s, ok, err := FindTopLevel(obj, key)
	if err != nil || !ok {
		return "", false
	}
	return jsonString(obj[s.Start:s.End])
}
