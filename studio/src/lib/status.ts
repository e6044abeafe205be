// A run's live status event ("status" on /v1/runs/{id}/events) applied to the run shown.
import type { RunDetails, Status } from "./api";

export interface StatusEvent {
  status: Status;
  error: string | null;
  status_times: Record<string, string | null>;
}

const ENDS = ["Completed", "Failed", "Canceled"];

/**
 * The run with the event's status, error and per-state times, and the times derived from
 * them as the API derives them (runstream.runs: queued_at = Queued, started_at = Running,
 * ended_at = the earliest terminal time), so the header's Started, Ended and Duration
 * follow at once instead of after the next read of the run.
 */
export function withStatus(run: RunDetails, event: StatusEvent): RunDetails {
  const times = event.status_times;
  const ends = ENDS.map((s) => times[s]).filter((t): t is string => !!t).sort((a, b) => Date.parse(a) - Date.parse(b));
  return {
    ...run,
    status: event.status,
    error: event.error,
    status_times: times,
    queued_at: times.Queued ?? run.queued_at,
    started_at: times.Running ?? run.started_at,
    ended_at: ends[0] ?? run.ended_at,
  };
}
