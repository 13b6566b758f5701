/**
 * What the servers count, by name: the families of the process's registry
 * (`metrics.ts`) and, per server, the cells it fetches once at start, so
 * that counting is a field write. A stream connection counts once, when it
 * closes (bytes, duration), not per chunk: the byte path pays nothing.
 * Every connection the listener takes ends as exactly one of accepted (its
 * handler ran) or refused (with its reason), so `accepted + refused` is
 * what the listener took.
 *
 * @module
 */

import { openDescriptorCount, openFileLimit } from "./descriptors.ts";
import {
  type Cell,
  type HistogramCell,
  type Labels,
  type MetricsRegistry,
  processMetrics,
  type Sample,
} from "./metrics.ts";
import { FAILURE_SOURCES, type PoolTarget } from "./targets.ts";

/** Why a stream connection was closed before its handler ran. */
export type StreamRefusal =
  | "access"
  | "per-source"
  | "full"
  | "rate"
  | "proxy-header"
  | "tls-handshake"
  | "client-certificate";

/** Every {@linkcode StreamRefusal}, in the order the stats show them. */
export const STREAM_REFUSALS: readonly StreamRefusal[] = [
  "access",
  "per-source",
  "full",
  "rate",
  "proxy-header",
  "tls-handshake",
  "client-certificate",
];

/** Why a datagram was not answered. */
export type DatagramDrop =
  | "low-port"
  | "access"
  | "full"
  | "unbound"
  | "loop"
  | "rate";

/** Every {@linkcode DatagramDrop}. */
export const DATAGRAM_DROPS: readonly DatagramDrop[] = [
  "low-port",
  "access",
  "full",
  "unbound",
  "loop",
  "rate",
];

/**
 * The client-certificate result a TLS handshake is counted with until
 * servers ask for client certificates: `none` (none asked). The hook for
 * them: pass `verified`, `rejected` or `absent` to
 * {@linkcode StreamMetrics.tlsHandshake}.
 */
export const NO_CLIENT_CERTIFICATE = "none";

/**
 * Upper bounds of the connection-duration histogram, in seconds: from a
 * daytime reply (milliseconds) to a forwarded session of an hour.
 */
export const DURATION_BUCKETS_SECONDS: readonly number[] = [
  0.001,
  0.005,
  0.025,
  0.1,
  0.5,
  1,
  5,
  30,
  60,
  300,
  3600,
];

/**
 * The `service` label of a server: its label without the transport
 * (inetd's `echo/tcp` is `echo`), else the service's name.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { serviceLabel } from "./server_metrics.ts";
 *
 * assertEquals(serviceLabel("echo", "tcp", "echo/tcp"), "echo");
 * assertEquals(serviceLabel("exec", "tcp"), "exec");
 * ```
 */
export function serviceLabel(
  name: string,
  transport: string,
  label?: string,
): string {
  if (label === undefined) return name;
  return label.endsWith(`/${transport}`)
    ? label.slice(0, -transport.length - 1)
    : label;
}

const BYTES_IN_HELP =
  "Bytes received from clients (a stream connection's, when it closes).";
const BYTES_OUT_HELP =
  "Bytes sent to clients (a stream connection's, when it closes).";

/** A stream server's cells: fetched once, counted by field writes. */
export class StreamMetrics {
  /** Connections whose handler ran. */
  readonly accepted: Cell;
  /** Connections held now, whatever their stage. */
  readonly open: Cell;
  /** Refusals, by reason. */
  readonly refused: Readonly<Record<StreamRefusal, Cell>>;
  readonly #bytesIn: Cell;
  readonly #bytesOut: Cell;
  readonly #duration: HistogramCell;
  readonly #labels: Labels;
  readonly #registry: MetricsRegistry;

  /** The cells of `labels` (`service`, `transport`) in `registry`. */
  constructor(labels: Labels, registry: MetricsRegistry = processMetrics) {
    this.#labels = labels;
    this.#registry = registry;
    this.accepted = registry.counter(
      "sockets_connections_accepted_total",
      "Connections accepted and handed to the service (past access, limits, PROXY header and TLS handshake).",
      labels,
    );
    this.open = registry.gauge(
      "sockets_connections_open",
      "Connections open now, whatever their stage (PROXY header, TLS handshake, service).",
      labels,
    );
    this.refused = byReason(
      registry,
      "sockets_connections_refused_total",
      "Connections closed before the service saw them, by reason.",
      labels,
      STREAM_REFUSALS,
    );
    this.#bytesIn = registry.counter(
      "sockets_received_bytes_total",
      BYTES_IN_HELP,
      labels,
    );
    this.#bytesOut = registry.counter(
      "sockets_sent_bytes_total",
      BYTES_OUT_HELP,
      labels,
    );
    this.#duration = registry.histogram(
      "sockets_connection_duration_seconds",
      "How long accepted connections lasted, from accept to close.",
      labels,
      DURATION_BUCKETS_SECONDS,
    );
  }

  /** An accepted connection ended: its bytes and how long it lasted. */
  closed(bytesIn: number, bytesOut: number, openedAtMs: number): void {
    this.#bytesIn.value += bytesIn;
    this.#bytesOut.value += bytesOut;
    this.#duration.observe((performance.now() - openedAtMs) / 1000);
  }

  /**
   * The counter of TLS handshakes done with `protocol` (`TLSv1.3`) and
   * `clientCertificate` (see {@linkcode NO_CLIENT_CERTIFICATE}).
   */
  tlsHandshake(
    protocol: string,
    clientCertificate: string = NO_CLIENT_CERTIFICATE,
  ): Cell {
    return this.#registry.counter(
      "sockets_tls_handshakes_total",
      "TLS handshakes completed, by protocol version and client-certificate result.",
      {
        ...this.#labels,
        protocol,
        client_certificate: clientCertificate,
      },
    );
  }
}

/** A datagram server's cells. */
export class DatagramMetrics {
  /** Datagrams received. */
  readonly received: Cell;
  /** Replies sent. */
  readonly sent: Cell;
  /** Bytes received in datagrams. */
  readonly bytesIn: Cell;
  /** Bytes sent in replies. */
  readonly bytesOut: Cell;
  /** Datagrams dropped (or replies held back), by reason. */
  readonly dropped: Readonly<Record<DatagramDrop, Cell>>;

  /** The cells of `labels` in `registry`. */
  constructor(labels: Labels, registry: MetricsRegistry = processMetrics) {
    this.received = registry.counter(
      "sockets_datagrams_received_total",
      "Datagrams received.",
      labels,
    );
    this.sent = registry.counter(
      "sockets_datagrams_sent_total",
      "Datagrams sent in reply.",
      labels,
    );
    this.bytesIn = registry.counter(
      "sockets_received_bytes_total",
      BYTES_IN_HELP,
      labels,
    );
    this.bytesOut = registry.counter(
      "sockets_sent_bytes_total",
      BYTES_OUT_HELP,
      labels,
    );
    this.dropped = byReason(
      registry,
      "sockets_datagrams_dropped_total",
      "Datagrams not answered or forwarded, by reason (rate: the reply was held back; full: a forwarder's sessions).",
      labels,
      DATAGRAM_DROPS,
    );
  }
}

/** An exec service's cells: programs started, running, and how they ended. */
export class ProgramMetrics {
  readonly #started: Cell;
  readonly #running: Cell;
  readonly #labels: Labels;
  readonly #registry: MetricsRegistry;

  /** The cells of `labels` in `registry`. */
  constructor(labels: Labels, registry: MetricsRegistry = processMetrics) {
    this.#labels = labels;
    this.#registry = registry;
    this.#started = registry.counter(
      "sockets_programs_started_total",
      "Programs started, one per client.",
      labels,
    );
    this.#running = registry.gauge(
      "sockets_programs_running",
      "Programs running now.",
      labels,
    );
  }

  /** A program started. */
  started(): void {
    this.#started.value++;
    this.#running.value++;
  }

  /** A program started by {@linkcode ProgramMetrics.started} was reaped. */
  ended(status: Deno.CommandStatus): void {
    this.#running.value--;
    if (status.signal) {
      this.#registry.counter(
        "sockets_program_signals_total",
        "Programs ended by a signal, by signal.",
        { ...this.#labels, signal: status.signal },
      ).value++;
    } else {
      this.#registry.counter(
        "sockets_program_exits_total",
        "Programs that exited, by exit status.",
        { ...this.#labels, code: String(status.code) },
      ).value++;
    }
  }
}

/**
 * Adds a forwarder's targets to `registry`, read at each snapshot: state,
 * clients in flight, failures and checks. Returns the function that
 * removes them (when the server stops).
 */
export function watchTargets(
  service: string,
  targets: () => readonly PoolTarget[],
  registry: MetricsRegistry = processMetrics,
): () => void {
  return registry.collect(() => {
    const samples: Sample[] = [];
    for (const target of targets()) {
      const labels = { service, target: target.key };
      samples.push(
        {
          name: "sockets_target_up",
          help: "Whether a target takes clients (1) or is down (0).",
          type: "gauge",
          labels,
          value: target.up ? 1 : 0,
        },
        {
          name: "sockets_target_connections_open",
          help: "Clients (or UDP sessions) forwarded to a target now.",
          type: "gauge",
          labels,
          value: target.active,
        },
      );
      for (const source of FAILURE_SOURCES) {
        samples.push({
          name: "sockets_target_failures_total",
          help:
            "A target's failures: clients' connects, active checks, clients' requests dropped unanswered.",
          type: "counter",
          labels: { ...labels, source },
          value: target.failures[source],
        });
      }
      for (const result of ["ok", "failed"] as const) {
        samples.push({
          name: "sockets_target_checks_total",
          help: "Active health checks of a target, by result.",
          type: "counter",
          labels: { ...labels, result },
          value: result === "ok"
            ? target.checks - target.failures.check
            : target.failures.check,
        });
      }
    }
    return samples;
  });
}

/**
 * The process's figures, read at each snapshot: resident memory and heap
 * (always), open descriptors and their limit (with `--allow-ffi` for
 * libc, as `descriptors.ts` reads them).
 */
export function processSamples(): Sample[] {
  const memory = Deno.memoryUsage();
  const samples: Sample[] = [
    {
      name: "process_resident_memory_bytes",
      help: "Resident memory size in bytes.",
      type: "gauge",
      labels: {},
      value: memory.rss,
    },
    {
      name: "sockets_heap_used_bytes",
      help: "JavaScript heap in use, in bytes.",
      type: "gauge",
      labels: {},
      value: memory.heapUsed,
    },
    {
      name: "sockets_heap_total_bytes",
      help: "JavaScript heap reserved, in bytes.",
      type: "gauge",
      labels: {},
      value: memory.heapTotal,
    },
  ];
  // Both `undefined` without FFI to libc (asked, never prompted for):
  // Deno lists `/proc/self/fd` only with --allow-all.
  const open = openDescriptorCount();
  if (open !== undefined) {
    samples.push({
      name: "process_open_fds",
      help: "Open file descriptors.",
      type: "gauge",
      labels: {},
      value: open,
    });
  }
  const limit = openFileLimit();
  if (limit !== undefined) {
    samples.push({
      name: "process_max_fds",
      help: "Limit on open file descriptors (soft RLIMIT_NOFILE).",
      type: "gauge",
      labels: {},
      value: limit,
    });
  }
  return samples;
}

processMetrics.collect(processSamples);

/** A counter of `name` for each of `reasons`, labelled `reason`. */
function byReason<R extends string>(
  registry: MetricsRegistry,
  name: string,
  help: string,
  labels: Labels,
  reasons: readonly R[],
): Record<R, Cell> {
  const cells = {} as Record<R, Cell>;
  for (const reason of reasons) {
    cells[reason] = registry.counter(name, help, { ...labels, reason });
  }
  return cells;
}
