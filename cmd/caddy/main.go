// Command caddy is Caddy with the standard modules and the BTL Runtime modules, pinned by this
// module's go.mod. `xcaddy build --with github.com/badtheorylabs/btl-runtime=.` builds the same.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/badtheorylabs/btl-runtime/caddymodule"
)

func main() { caddycmd.Main() }
