// Package btlruntime registers the BTL Runtime Caddy modules, so that
// `xcaddy build --with github.com/badtheorylabs/btl-runtime` includes them.
package btlruntime

import _ "github.com/badtheorylabs/btl-runtime/caddymodule"
