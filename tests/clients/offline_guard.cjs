// Preloaded into the Node tools under test (NODE_OPTIONS=--require): they may reach 127.0.0.1 only.
// Anything else (version checks, telemetry, hub look-ups) fails at once instead of waiting on DNS, and the
// host is appended to $GATEWAY_TEST_BLOCKED_LOG so a test can show what a tool tried to reach.
"use strict";
const dns = require("dns");
const fs = require("fs");

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[?::1\]?)$/i;

function note(host) {
  const file = process.env.GATEWAY_TEST_BLOCKED_LOG;
  if (file) {
    try { fs.appendFileSync(file, host + "\n"); } catch (_) { /* best effort */ }
  }
}

function blocked(host) {
  note(host);
  const error = new Error(`getaddrinfo ENOTFOUND ${host} (offline test: only 127.0.0.1 is reachable)`);
  error.code = "ENOTFOUND";
  error.hostname = host;
  return error;
}

if (typeof globalThis.fetch === "function") {
  const realFetch = globalThis.fetch;
  globalThis.fetch = function guardedFetch(input, init) {
    let host = "";
    try {
      const url = new URL(typeof input === "string" || input instanceof URL ? String(input) : input.url);
      host = url.hostname;
    } catch (_) {
      return realFetch(input, init);
    }
    if (!LOOPBACK.test(host)) {
      return Promise.reject(new TypeError("fetch failed", { cause: blocked(host) }));
    }
    return realFetch(input, init);
  };
}

const realLookup = dns.lookup;
dns.lookup = function guardedLookup(hostname, options, callback) {
  const done = typeof options === "function" ? options : callback;
  if (hostname && !LOOPBACK.test(hostname)) {
    process.nextTick(() => done(blocked(hostname)));
    return {};
  }
  return realLookup.apply(dns, arguments);
};
if (dns.promises && dns.promises.lookup) {
  const realPromiseLookup = dns.promises.lookup;
  dns.promises.lookup = function guardedPromiseLookup(hostname, options) {
    if (hostname && !LOOPBACK.test(hostname)) return Promise.reject(blocked(hostname));
    return realPromiseLookup.call(dns.promises, hostname, options);
  };
}
