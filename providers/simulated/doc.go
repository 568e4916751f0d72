// Package simulated is a deterministic, in-process OpenAI-compatible upstream. Tests, the
// `make run` demo and the load benchmarks use it in place of a real provider, so it follows the
// OpenAI Chat Completions wire format closely (reference providers.md §1, §11): the response and
// chunk shapes, the SSE framing, the four-key error envelope, validation errors, rate-limit
// headers and automatic prefix caching in 128-token steps from 1024 tokens (tokenopt.md §1.1).
//
// Everything is a function of the request (and Options.Seed): the same request yields the same
// answer bytes, the same id and the same usage, except cached_tokens which depends on the
// prefix cache state and created which comes from Options.Now.
//
// # Token counting
//
// The prompt is serialized canonically: the tools array bytes (when present) and then, for every
// message, role + "\n" + text + "\n", where text is the string content or the concatenated text
// parts (image, audio and file parts stand for a 340-byte placeholder, i.e. 85 tokens), followed
// for assistant tool calls by name + "\n" + arguments + "\n" per call. prompt_tokens is
// ceil(bytes/4) + 3 per message; completion tokens are ceil(bytes/4) of the answer, at least 1.
//
// # Prefix caching
//
// Prompts of at least 1024 tokens are cached at every boundary 1024+128k. cached_tokens is the
// largest boundary whose prefix hash was seen within Options.CacheTTL in the request's cache
// scope; every boundary of the request is then (re)stored there. The scope follows
// Options.OpenAICache (openai_cache.go): by default the API key (the bearer token) and the
// prompt_cache_key; in the overflow models, the machine the request was routed to, where a
// route busier than 15 requests a minute spills to other machines.
//
// # Directives
//
// Faults are triggered by directives in the text of the last user message, so that tests going
// through the gateway need no extra headers. A directive block is "[sim:" + comma separated
// key=value items + "]"; several blocks may appear. Keys:
//
//	status=N             answer with HTTP status N and an OpenAI error envelope
//	code=C               error code for status (e.g. insufficient_quota with 429)
//	retry_after=D        Retry-After for status (seconds, or a Go duration such as 1500ms)
//	ttfb=D               delay before the response headers (bare number: milliseconds)
//	chunk_delay=D        delay between stream chunks
//	cut_after=N          abort the connection after N content chunks (stream) or mid-body
//	stream_error_after=N stream: send data: {"error":…} after N content chunks, then end
//	hold=NAME            block until Server.Release(NAME), 30 s or client exit: stream after
//	                     the first content chunk, non-stream before the headers
//	recall=PHRASE        answer "<PHRASE> <next word>." from the newest copy of PHRASE in the
//	                     prompt (outside directives), as a model reads a fact it was given
//	answer_tokens=N      the answer runs on for N tokens (a runaway answer) unless capped
//	answer=TEXT          use TEXT verbatim as the answer; must be the last item of its block
//	                     and runs to the closing "]"
//
// Random faults at configured rates are set with Server.SetFaults or POST /_sim/faults.
package simulated
