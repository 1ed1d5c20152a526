// Package jsclient embeds the browser client, @wsgate/client, so wsgate can
// serve it at /wsgate-client.js. The file is one dependency-free ES module.
package jsclient

import _ "embed"

// Module is clients/js/src/index.js, an ES module (serve it as text/javascript).
//
//go:embed src/index.js
var Module []byte
