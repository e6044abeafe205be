import { describe, expect, it } from "vitest";
import type { RunDetails } from "./api";
import { withStatus } from "./status";

const running: RunDetails = {
  run_id: "r", experiment: "e", workspace: "w", parent_run_id: null, display_name: null, status: "Running",
  compute_target: null, created_at: "2026-12-02T10:00:00.000000+00:00", queued_at: null,
  started_at: "2026-12-02T10:00:01.000000+00:00", ended_at: null, tags: {}, description: null,
  status_times: { NotStarted: "2026-12-02T10:00:00.000000+00:00", Running: "2026-12-02T10:00:01.000000+00:00" },
  error: null, properties: {}, children: [], last_heartbeat_at: null, dropped_events: 0, number: 1, portal_url: "",
  logged_after_end: 0,
};

describe("withStatus", () => {
  it("fills the end time from a terminal status event", () => {
    const done = withStatus(running, {
      status: "Completed", error: null,
      status_times: { ...running.status_times, Finalizing: "2026-12-02T10:00:05.000000+00:00", Completed: "2026-12-02T10:00:06.500000+00:00" },
    });
    expect(done.status).toBe("Completed");
    expect(done.ended_at).toBe("2026-12-02T10:00:06.500000+00:00");
    expect(done.started_at).toBe(running.started_at);
    expect(done.status_times.Finalizing).toBe("2026-12-02T10:00:05.000000+00:00");
  });
  it("fills the start of a run that was queued, and takes the earliest end", () => {
    const queued = { ...running, status: "Queued" as const, started_at: null, status_times: { Queued: "2026-12-02T10:00:00.500000+00:00" } };
    const started = withStatus(queued, { status: "Running", error: null, status_times: { Queued: "2026-12-02T10:00:00.500000+00:00", Running: "2026-12-02T10:00:02.000000+00:00" } });
    expect(started.started_at).toBe("2026-12-02T10:00:02.000000+00:00");
    expect(started.queued_at).toBe("2026-12-02T10:00:00.500000+00:00");
    expect(started.ended_at).toBeNull();
    const failed = withStatus(started, { status: "Failed", error: "boom", status_times: { ...started.status_times, Canceled: "2026-12-02T10:00:09.000000+00:00", Failed: "2026-12-02T10:00:08.000000+00:00" } });
    expect(failed.ended_at).toBe("2026-12-02T10:00:08.000000+00:00");
    expect(failed.error).toBe("boom");
  });
});
