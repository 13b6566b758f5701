// Preloaded (`deno run --preload`) by tests/tls_engine_test.ts: makes this
// runtime's TLS engine behave differently from what lib/tls_native.ts
// drives, as a future Deno's might, while every method it looks for stays
// there. `receive` (encrypted bytes in) takes the bytes and drops them:
// a handshake never gets anywhere. `node:tls` itself feeds the engine by
// `readBuffer`, so the adapter still works.
import process from "node:process";
import { Duplex } from "node:stream";
import { createSecureContext, TLSSocket } from "node:tls";

// Only so the binding is loaded, as lib/tls_native.ts loads it.
(process as unknown as { binding(name: string): unknown }).binding("tcp_wrap");
const probe = new TLSSocket(
  new Duplex({ read() {}, write: (_chunk, _encoding, done) => done() }),
  { isServer: true, secureContext: createSecureContext({}) },
);
probe.on("error", () => {});
const TLSWrap = (probe as unknown as { _handle: object })._handle.constructor;
probe.destroy();
TLSWrap.prototype.receive = function receive(_bytes: Uint8Array): void {};
