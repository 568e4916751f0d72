package catalog

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/badtheorylabs/btl-runtime/providers"
)

// Billable options the catalog has no rates for. A provider bills them on top of the model's
// text tokens — audio tokens at audio rates, a fee per web search or plugin call — and the
// usage normal form (text tokens by kind) cannot carry them, so a gateway that forwarded them
// would serve them unbilled. Until the catalog prices them they are refused.

// UnpricedOption is one such option found in a request.
type UnpricedOption struct {
	// Param is the request parameter that asks for it ("audio", "messages[2].content[0]").
	Param string
	// What names the billable thing, for the error message.
	What string
}

// audioPartTail ends the type of an input_audio content part (and its member key): its rare
// first byte keeps the look for it cheap in long prompts, which nearly never have one.
var audioPartTail = []byte(`_audio"`)

// FindUnpricedOption reports the first billable option of a chat request that the catalog
// cannot price: audio output (modalities with "audio", the audio parameter), audio input
// (input_audio content parts), web_search_options (a fee per search) and OpenRouter's plugins
// (fees per call or result). Top-level keys were matched exactly by the request view, which
// refuses their case variants.
func FindUnpricedOption(req *providers.ChatRequest) (UnpricedOption, bool) {
	switch {
	case !isNull(req.Modalities) && arrayHasString(req.Modalities, "audio"):
		return UnpricedOption{Param: "modalities", What: "audio output"}, true
	case !isNull(req.Audio):
		return UnpricedOption{Param: "audio", What: "audio output"}, true
	case !isNull(req.WebSearchOptions):
		return UnpricedOption{Param: "web_search_options", What: "web search (a fee per search)"}, true
	case !isNull(req.Plugins) && (req.Plugins[0] != '[' || len(bytes.TrimSpace(req.Plugins[1:len(req.Plugins)-1])) > 0):
		return UnpricedOption{Param: "plugins", What: "provider plugins (fees per call or result)"}, true
	}
	if len(req.Messages) > 0 && req.Messages[0] == '[' && bytes.Contains(req.Messages, audioPartTail) {
		if p, ok := audioInput(req.Messages); ok {
			return UnpricedOption{Param: p, What: "audio input (billed at audio rates)"}, true
		}
	}
	return UnpricedOption{}, false
}

func isNull(raw []byte) bool { return len(raw) == 0 || string(raw) == "null" }

// arrayHasString reports whether raw is a JSON array with the string s among its elements.
func arrayHasString(raw []byte, s string) bool {
	if raw[0] != '[' {
		return false
	}
	has := false
	_ = providers.EachElement(raw, func(_ int, el []byte) bool {
		var v string
		has = el[0] == '"' && json.Unmarshal(el, &v) == nil && v == s
		return !has
	})
	return has
}

// audioInput finds the first input_audio content part in a messages array and returns its
// parameter path. A message's content key matches in any case, as the request view and the
// translating adapters read it; a part's type matches exactly, as the view requires.
func audioInput(messages []byte) (string, bool) {
	param := ""
	_ = providers.EachElement(messages, func(i int, msg []byte) bool {
		if msg[0] != '{' || !bytes.Contains(msg, audioPartTail) {
			return true
		}
		_ = providers.EachTopLevel(msg, func(quoted []byte, v providers.Span) bool {
			content := msg[v.Start:v.End]
			if content[0] != '[' || !keyFold(quoted, "content") {
				return true
			}
			_ = providers.EachElement(content, func(j int, part []byte) bool {
				if part[0] != '{' {
					return true
				}
				ts, ok, _ := providers.FindTopLevel(part, "type")
				var typ string
				if ok && json.Unmarshal(part[ts.Start:ts.End], &typ) == nil && typ == providers.PartInputAudio {
					param = "messages[" + strconv.Itoa(i) + "].content[" + strconv.Itoa(j) + "]"
				}
				return param == ""
			})
			return param == ""
		})
		return param == ""
	})
	return param, param != ""
}

// keyFold matches a quoted JSON key against name as encoding/json does: escapes decoded, ASCII
// case folded.
func keyFold(quoted []byte, name string) bool {
	var k string
	return json.Unmarshal(quoted, &k) == nil && strings.EqualFold(k, name)
}
