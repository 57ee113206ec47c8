//! The end-of-run report: a table for people, one JSON line for scripts.

use crate::args::Wire;
use crate::procfs::ProcSample;
use crate::stats::{LatencySummary, LossReport};
use serde::Serialize;
use std::fmt::{self, Write as _};

/// Everything a run measured. Serialized as the final JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The wire the connections spoke.
    #[serde(serialize_with = "ser_wire")]
    pub wire: Wire,
    /// Whether this was an idle (hold-only) run.
    pub idle: bool,
    /// Receiving connections.
    pub connections: usize,
    /// Sending connections.
    pub senders: usize,
    /// Rooms.
    pub rooms: usize,
    /// Accounts the connections shared.
    pub users: usize,
    /// Total offered messages per second (0: as fast as acknowledged).
    pub rate: f64,
    /// Most unacknowledged sends per sender.
    pub in_flight: usize,
    /// Body size, bytes.
    pub size: usize,
    /// Asked duration, seconds.
    pub duration_secs: f64,
    /// Accounts, rooms and joins through the HTTP API, seconds.
    pub accounts_secs: f64,
    /// Opening (and subscribing) every connection, seconds.
    pub connect_secs: f64,
    /// Per-connection time to connect and authenticate (to the `welcome`).
    pub connect: LatencySummary,
    /// From the first send to the end of the drain (or of the hold), seconds.
    pub traffic_secs: f64,
    /// Sends issued.
    pub attempted: u64,
    /// Sends acknowledged (stored).
    pub acked: u64,
    /// Sends refused or timed out.
    pub send_errors: u64,
    /// Acknowledged sends per second of the asked duration.
    pub send_rate: f64,
    /// How far the paced senders fell behind their schedule, at worst, ms.
    pub max_sender_lag_ms: f64,
    /// Deliveries expected and received.
    pub loss: LossReport,
    /// Lost / expected.
    pub loss_ratio: f64,
    /// Whether every expected delivery arrived within the drain bound.
    pub drained: bool,
    /// Deliveries received per second, from the first send to the last delivery.
    pub deliveries_per_sec: f64,
    /// Send → receive latency (send time in the body, read by the receiving task).
    pub latency: LatencySummary,
    /// Send → acknowledgement latency (stored on the server, `sent` reply read).
    pub ack_latency: LatencySummary,
    /// Connections that closed or dropped before the end.
    pub drops: u64,
    /// Ephemeral events the client discarded because a reader fell behind.
    pub lagged: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// The server's memory and CPU (with `--server-pid`).
    pub server: Option<ServerReport>,
    /// The load tool's own CPU and memory during the traffic.
    pub tool: Option<ToolReport>,
    /// Wall time of the whole run, seconds.
    pub total_secs: f64,
}

fn ser_wire<S: serde::Serializer>(w: &Wire, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match w {
        Wire::Ws => "ws-json",
        Wire::WsPostcard => "ws-postcard",
        Wire::Tcp => "tcp",
    })
}

/// The server process's figures.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerReport {
    /// VmRSS before the load connections opened, KiB.
    pub rss_before_kib: u64,
    /// VmRSS with every connection open and subscribed (1 s after), KiB.
    pub rss_connected_kib: u64,
    /// VmRSS at the end of the traffic or hold, KiB.
    pub rss_end_kib: u64,
    /// VmRSS 1 s after the connections closed, KiB.
    pub rss_after_kib: Option<u64>,
    /// (end − before) / connections: what each connection costs the server, bytes. At the
    /// end rather than just after connecting, so buffers grown by the traffic are counted.
    pub rss_per_connection_bytes: f64,
    /// User + system CPU seconds during the traffic (or hold).
    pub cpu_secs: f64,
    /// CPU seconds per million deliveries received.
    pub cpu_secs_per_million_deliveries: Option<f64>,
}

impl ServerReport {
    /// Derives the per-connection and per-delivery figures.
    pub fn new(
        before: ProcSample,
        connected: ProcSample,
        end: ProcSample,
        after: Option<ProcSample>,
        cpu_secs: f64,
        deliveries: u64,
        connections: usize,
    ) -> ServerReport {
        let grown = end.rss_kib.saturating_sub(before.rss_kib) as f64 * 1024.0;
        ServerReport {
            rss_before_kib: before.rss_kib,
            rss_connected_kib: connected.rss_kib,
            rss_end_kib: end.rss_kib,
            rss_after_kib: after.map(|a| a.rss_kib),
            rss_per_connection_bytes: grown / connections.max(1) as f64,
            cpu_secs,
            cpu_secs_per_million_deliveries: per_million(cpu_secs, deliveries),
        }
    }
}

/// CPU seconds per million deliveries, if there were any.
fn per_million(cpu_secs: f64, deliveries: u64) -> Option<f64> {
    (deliveries > 0).then(|| cpu_secs / (deliveries as f64 / 1e6))
}

/// The load tool's own figures: it shares the machine with the server.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ToolReport {
    /// User + system CPU seconds during the traffic (or hold).
    pub cpu_secs: f64,
    /// CPU seconds per million deliveries received: the client side's cost of a delivery,
    /// to set against the server's (both share the machine).
    pub cpu_secs_per_million_deliveries: Option<f64>,
    /// VmRSS at the end of the traffic, KiB.
    pub rss_kib: u64,
}

impl ToolReport {
    /// The tool's figures from its CPU time, its RSS and the deliveries it received.
    pub fn new(cpu_secs: f64, rss_kib: u64, deliveries: u64) -> ToolReport {
        ToolReport {
            cpu_secs,
            cpu_secs_per_million_deliveries: per_million(cpu_secs, deliveries),
            rss_kib,
        }
    }
}

impl Report {
    /// The one-line JSON form.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut t = String::new();
        let w = match self.wire {
            Wire::Ws => "WebSocket (JSON)",
            Wire::WsPostcard => "WebSocket (postcard)",
            Wire::Tcp => "TCP (postcard)",
        };
        let rate = if self.idle {
            "idle".to_string()
        } else if self.rate > 0.0 {
            format!("{} msg/s total", self.rate)
        } else {
            format!(
                "as fast as acknowledged, {} in flight per sender",
                self.in_flight
            )
        };
        let _ = writeln!(
            t,
            "chat-load: {w}, {} receivers + {} senders, {} rooms, {} accounts, {rate}, {} B bodies, {} s",
            self.connections, self.senders, self.rooms, self.users, self.size, self.duration_secs
        );
        let row = |t: &mut String, k: &str, v: String| {
            let _ = writeln!(t, "  {k:<28} {v}");
        };
        let lat = |s: &LatencySummary| {
            format!(
                "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms  (n={})",
                s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms, s.count
            )
        };
        row(
            &mut t,
            "setup (accounts, rooms)",
            format!("{:.2} s", self.accounts_secs),
        );
        row(
            &mut t,
            "connect (all)",
            format!("{:.2} s", self.connect_secs),
        );
        row(&mut t, "connect (each)", lat(&self.connect));
        if !self.idle {
            row(
                &mut t,
                "sent (acked / issued)",
                format!(
                    "{} / {}  ({:.0}/s, {} errors, sender lag max {:.1} ms)",
                    self.acked,
                    self.attempted,
                    self.send_rate,
                    self.send_errors,
                    self.max_sender_lag_ms
                ),
            );
            row(
                &mut t,
                "deliveries (recv / expected)",
                format!(
                    "{} / {}  lost {} ({:.4} %), extra {}, short receivers {}{}",
                    self.loss.received,
                    self.loss.expected,
                    self.loss.lost,
                    self.loss_ratio * 100.0,
                    self.loss.extra,
                    self.loss.receivers_short,
                    if self.drained {
                        ""
                    } else {
                        "  [drain timed out]"
                    }
                ),
            );
            row(
                &mut t,
                "deliveries/s",
                format!("{:.0}", self.deliveries_per_sec),
            );
            row(&mut t, "latency send→receive", lat(&self.latency));
            row(&mut t, "latency send→ack", lat(&self.ack_latency));
        }
        row(
            &mut t,
            "drops / lagged events",
            format!("{} / {}", self.drops, self.lagged),
        );
        if let Some(e) = &self.first_error {
            row(&mut t, "first error", e.clone());
        }
        if let Some(s) = &self.server {
            row(
                &mut t,
                "server RSS",
                format!(
                    "before {} KiB, connected {} KiB, end {} KiB, after {}",
                    s.rss_before_kib,
                    s.rss_connected_kib,
                    s.rss_end_kib,
                    s.rss_after_kib
                        .map(|a| format!("{a} KiB"))
                        .unwrap_or_else(|| "-".into())
                ),
            );
            row(
                &mut t,
                "server RSS per connection",
                format!(
                    "{:.0} B ({:.2} KiB)",
                    s.rss_per_connection_bytes,
                    s.rss_per_connection_bytes / 1024.0
                ),
            );
            row(
                &mut t,
                "server CPU",
                format!(
                    "{:.2} s{}",
                    s.cpu_secs,
                    s.cpu_secs_per_million_deliveries
                        .map(|c| format!(" ({c:.2} s per million deliveries)"))
                        .unwrap_or_default()
                ),
            );
        }
        if let Some(tool) = &self.tool {
            row(
                &mut t,
                "load tool CPU / RSS",
                format!(
                    "{:.2} s{} / {} KiB",
                    tool.cpu_secs,
                    tool.cpu_secs_per_million_deliveries
                        .map(|c| format!(" ({c:.2} s per million deliveries)"))
                        .unwrap_or_default(),
                    tool.rss_kib
                ),
            );
        }
        f.write_str(&t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_and_per_delivery_arithmetic() {
        let s = |rss_kib, cpu_secs| ProcSample { rss_kib, cpu_secs };
        let r = ServerReport::new(
            s(10_000, 1.0),
            s(60_000, 2.0),
            s(70_000, 5.0),
            None,
            3.0,
            2_000_000,
            10_000,
        );
        assert!((r.rss_per_connection_bytes - 6_144.0).abs() < 1e-9);
        assert_eq!(r.cpu_secs_per_million_deliveries, Some(1.5));
        let none = ServerReport::new(s(5, 0.0), s(4, 0.0), s(4, 0.0), None, 0.0, 0, 0);
        assert_eq!(none.rss_per_connection_bytes, 0.0);
        assert_eq!(none.cpu_secs_per_million_deliveries, None);
        let tool = ToolReport::new(4.0, 1, 8_000_000);
        assert_eq!(tool.cpu_secs_per_million_deliveries, Some(0.5));
        assert_eq!(
            ToolReport::new(4.0, 1, 0).cpu_secs_per_million_deliveries,
            None
        );
    }
}
