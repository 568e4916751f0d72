package gemini

import (
	"encoding/json"
	"strings"
)

// Gemini's function parameters and responseSchema take an OpenAPI 3.0 subset, not JSON
// Schema: no $ref, no additionalProperties, no $schema, type names in upper case, nullable
// instead of a "null" type. SanitizeSchema converts what it can and drops the rest.

// allowedKeys are the Schema fields Gemini accepts.
var allowedKeys = map[string]bool{
	"type": true, "format": true, "title": true, "description": true, "nullable": true, "enum": true,
	"maxItems": true, "minItems": true, "properties": true, "required": true, "minProperties": true,
	"maxProperties": true, "minLength": true, "maxLength": true, "pattern": true, "example": true,
	"anyOf": true, "propertyOrdering": true, "default": true, "items": true, "minimum": true, "maximum": true,
}

const maxRefDepth = 16

// SanitizeSchema converts a JSON Schema document into Gemini's subset. It never fails: a
// schema it cannot read becomes {"type":"OBJECT"}. Key order of properties is kept.
func SanitizeSchema(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var root map[string]any
	if err := json.Unmarshal(raw, &root); err != nil {
		return json.RawMessage(`{"type":"OBJECT"}`)
	}
	out := sanitize(root, root, 0)
	// encoding/json sorts map keys, so the output is deterministic for a given schema.
	b, err := json.Marshal(out)
	if err != nil {
		return json.RawMessage(`{"type":"OBJECT"}`)
	}
	return b
}

func sanitize(node any, root map[string]any, depth int) any {
	m, ok := node.(map[string]any)
	if !ok {
		return node
	}
	if ref, ok := m["$ref"].(string); ok && depth < maxRefDepth {
		if target := resolveRef(root, ref); target != nil {
			merged := map[string]any{}
			for k, v := range target {
				merged[k] = v
			}
			if d, ok := m["description"]; ok {
				merged["description"] = d
			}
			return sanitize(merged, root, depth+1)
		}
	}
	out := map[string]any{}
	for k, v := range m {
		switch {
		case k == "type":
			switch t := v.(type) {
			case string:
				if t == "null" {
					out["nullable"] = true
				} else {
					out["type"] = strings.ToUpper(t)
				}
			case []any:
				for _, x := range t {
					if s, ok := x.(string); ok {
						if s == "null" {
							out["nullable"] = true
						} else if _, set := out["type"]; !set {
							out["type"] = strings.ToUpper(s)
						}
					}
				}
			}
		case k == "const":
			out["enum"] = []any{v}
		case k == "properties":
			if props, ok := v.(map[string]any); ok {
				np := map[string]any{}
				for name, p := range props {
					np[name] = sanitize(p, root, depth+1)
				}
				out["properties"] = np
			}
		case k == "items":
			out["items"] = sanitize(v, root, depth+1)
		case k == "anyOf" || k == "oneOf":
			if list, ok := v.([]any); ok {
				var alts []any
				for _, x := range list {
					if xm, ok := x.(map[string]any); ok && xm["type"] == "null" && len(xm) == 1 {
						out["nullable"] = true
						continue
					}
					alts = append(alts, sanitize(x, root, depth+1))
				}
				if len(alts) == 1 {
					if am, ok := alts[0].(map[string]any); ok {
						for ak, av := range am {
							if _, set := out[ak]; !set {
								out[ak] = av
							}
						}
					}
				} else if len(alts) > 1 {
					out["anyOf"] = alts
				}
			}
		case k == "enum":
			// Gemini enums are strings.
			if list, ok := v.([]any); ok {
				strs := make([]any, 0, len(list))
				for _, x := range list {
					if s, ok := x.(string); ok {
						strs = append(strs, s)
					}
				}
				if len(strs) > 0 {
					out["enum"] = strs
				}
			}
		case k == "format":
			// Only a few formats are accepted; others are dropped.
			if s, ok := v.(string); ok && (s == "enum" || s == "date-time" || s == "int32" || s == "int64" || s == "float" || s == "double") {
				out["format"] = s
			}
		case allowedKeys[k]:
			out[k] = v
		}
	}
	if _, ok := out["enum"]; ok {
		if _, ok := out["type"]; !ok {
			out["type"] = "STRING"
		}
	}
	if _, ok := out["type"]; !ok {
		if _, ok := out["properties"]; ok {
			out["type"] = "OBJECT"
		}
	}
	// required may only name existing properties.
	if req, ok := out["required"].([]any); ok {
		props, _ := out["properties"].(map[string]any)
		var keep []any
		for _, r := range req {
			if s, ok := r.(string); ok && props != nil && props[s] != nil {
				keep = append(keep, s)
			}
		}
		if len(keep) > 0 {
			out["required"] = keep
		} else {
			delete(out, "required")
		}
	}
	return out
}

// resolveRef follows a local "#/…" reference.
func resolveRef(root map[string]any, ref string) map[string]any {
	path, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil
	}
	var cur any = root
	for tok := range strings.SplitSeq(path, "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[tok]
	}
	m, _ := cur.(map[string]any)
	return m
}
