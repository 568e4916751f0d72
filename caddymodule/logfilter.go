package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/badtheorylabs/btl-runtime/providers"
)

func init() {
	caddy.RegisterModule(SecretsFilter{})
}

// SecretsFilter is a log field filter (caddy.logging.encoders.filter.btl_secrets) for the
// request fields of Caddy's access and error logs. Caddy logs every request header and
// redacts only Authorization and cookies, so API keys sent as x-api-key (every Anthropic SDK),
// api-key or in any other header reached the log in clear. On request>headers it redacts
// credential headers by name and any header whose value looks like a key (a btl_ key
// anywhere); on request>uri, credential query parameters. Other fields pass unchanged.
//
//	log {
//		format filter {
//			wrap json
//			request>headers btl_secrets
//			request>uri btl_secrets
//		}
//	}
type SecretsFilter struct{}

// CaddyModule returns the Caddy module information.
func (SecretsFilter) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.logging.encoders.filter.btl_secrets",
		New: func() caddy.Module { return new(SecretsFilter) },
	}
}

// UnmarshalCaddyfile sets up the filter (it takes no options).
func (SecretsFilter) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the filter name
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// Filter redacts the field.
func (SecretsFilter) Filter(in zapcore.Field) zapcore.Field {
	switch in.Type {
	case zapcore.StringType:
		in.String = providers.RedactURI(in.String)
		return in
	case zapcore.ObjectMarshalerType:
		if m, ok := in.Interface.(zapcore.ObjectMarshaler); ok {
			return zap.Object(in.Key, redactedHeaders{m})
		}
	}
	// A shape this filter cannot inspect is dropped rather than logged unfiltered.
	return zap.Skip()
}

// redactedHeaders marshals a header object (name → array of values) through headerEncoder.
type redactedHeaders struct{ inner zapcore.ObjectMarshaler }

func (r redactedHeaders) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return r.inner.MarshalLogObject(headerEncoder{enc})
}

// headerEncoder replaces the values of a secret header before they reach the real encoder.
type headerEncoder struct{ zapcore.ObjectEncoder }

var redactedValue = zapcore.ArrayMarshalerFunc(func(enc zapcore.ArrayEncoder) error {
	enc.AppendString(providers.Redacted)
	return nil
})

func (e headerEncoder) AddArray(key string, arr zapcore.ArrayMarshaler) error {
	if providers.SecretHeader(key) || arrayLooksSecret(key, arr) {
		return e.ObjectEncoder.AddArray(key, redactedValue)
	}
	return e.ObjectEncoder.AddArray(key, arr)
}

func (e headerEncoder) AddString(key, value string) {
	if providers.SecretHeader(key) || providers.LooksSecret(value) {
		value = providers.Redacted
	}
	e.ObjectEncoder.AddString(key, value)
}

// arrayLooksSecret renders the header's values to look at them.
func arrayLooksSecret(key string, arr zapcore.ArrayMarshaler) bool {
	m := zapcore.NewMapObjectEncoder()
	if err := m.AddArray(key, arr); err != nil {
		return true
	}
	vals, _ := m.Fields[key].([]any)
	for _, v := range vals {
		if s, ok := v.(string); !ok || providers.LooksSecret(s) {
			return true
		}
	}
	return false
}

// Interface guards
var (
	_ logging.LogFieldFilter = (*SecretsFilter)(nil)
	_ caddyfile.Unmarshaler  = (*SecretsFilter)(nil)
)
