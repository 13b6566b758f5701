/**
 * Which TLS engine a server runs (`--tls-engine auto|native|node`), chosen
 * once, before its first connection. The runtime's own engine driven
 * directly (`tls_native.ts`: as fast as `Deno.listenTls`) rests on Deno
 * internals, so under `auto` (the default) it must first prove itself by
 * behaviour ({@linkcode proveNativeTls}: a handshake and a round trip with
 * itself, over a pair of pipes); when it cannot, the server says so in one log line
 * and serves TLS with the `node:tls` adapter (`tls_node.ts`), which uses
 * only public API. `native` insists on the engine (a failed proof is an
 * error at start, not a quiet fallback); `node` uses the adapter without
 * asking.
 *
 * @module
 */

import type { SecureContext } from "node:tls";
import { proveNativeTls } from "./tls_native.ts";

/** The choices `--tls-engine` takes, the default first. */
export const TLS_ENGINE_CHOICES = ["auto", "native", "node"] as const;

/** What `--tls-engine` asks for: see the module doc. */
export type TlsEngineChoice = typeof TLS_ENGINE_CHOICES[number];

/** The engine a server's connections run on. */
export type TlsEngine = "native" | "node";

/**
 * `--tls-engine native` was asked for and the runtime's engine failed its
 * proof: the message says how, and what to do.
 *
 * @example
 * ```ts
 * import { assertInstanceOf } from "@std/assert";
 * import { TlsEngineError } from "./tls_engine.ts";
 *
 * assertInstanceOf(new TlsEngineError("no handshake"), Error);
 * ```
 */
export class TlsEngineError extends Error {
  /** Builds the error; `cause` is how the proof failed. */
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = "TlsEngineError";
  }
}

/** The engine chosen, and the log line owed when `auto` fell back. */
export interface TlsEngineChosen {
  /** What connections run on. */
  engine: TlsEngine;
  /** Set when the runtime's engine failed its proof under `auto`. */
  fallback?: string;
}

/**
 * Chooses the engine for a server whose certificate and key are `context`
 * (see the module doc): resolves to it, with the line to log when `auto`
 * fell back; rejects with {@linkcode TlsEngineError} when `native` was
 * asked for and the engine failed its proof.
 *
 * @example
 * ```ts ignore
 * const { engine, fallback } = await chooseTlsEngine(context, "auto");
 * if (fallback) log(fallback);
 * ```
 */
export async function chooseTlsEngine(
  context: SecureContext,
  choice: TlsEngineChoice = "auto",
): Promise<TlsEngineChosen> {
  if (choice === "node") return { engine: "node" };
  try {
    await proveNativeTls(context);
    return { engine: "native" };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    if (choice === "native") {
      throw new TlsEngineError(
        `--tls-engine native: the runtime's TLS engine failed its self-test (${reason}); use --tls-engine auto or node`,
        error,
      );
    }
    return {
      engine: "node",
      fallback:
        `TLS engine: the runtime's engine failed its self-test (${reason}); serving TLS with node:tls`,
    };
  }
}
