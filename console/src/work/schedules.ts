// Schedules (docs/tasks.md#schedules, `/api/v1/schedules`): the API's JSON, and the form's
// checks before anything is sent.

export interface Schedule {
  id: string;
  workflowName: string;
  /** 0: the workflow's latest version at each start. */
  workflowVersion: number;
  cron: string;
  timeZone: string;
  input: Record<string, unknown>;
  paused: boolean;
  /** Soonest first, up to ten; none while paused. */
  nextRunTimes: string[];
  recentRunIds: string[];
  note: string;
  createdAt: string;
}

export interface ScheduleDraft {
  workflowName: string;
  workflowVersion: string;
  cron: string;
  timeZone: string;
  input: string;
  paused: boolean;
  note: string;
}

export interface CreateSchedule {
  workflowName: string;
  workflowVersion: number;
  cron: string;
  timeZone: string;
  input: Record<string, unknown>;
  paused: boolean;
  note: string;
}

export type Checked = { ok: true; body: CreateSchedule } | { ok: false; error: string };

// As the gateway checks it (CreateSchedule.cron); the scheduler checks the fields' values.
const CRON_TEXT = /^[0-9A-Za-z*/,\- ]+$/;

/** The request a draft makes, or what is wrong with it: a cron expression of five fields (or
 * seven: seconds first, year last), a whole version (empty or 0: the latest at each start), the
 * input as a JSON object. */
export function checkSchedule(d: ScheduleDraft): Checked {
  const workflowName = d.workflowName.trim();
  if (!workflowName) return { ok: false, error: "choose a workflow" };
  const cron = d.cron.trim().split(/\s+/).join(" ");
  const fields = cron ? cron.split(" ").length : 0;
  if (fields !== 5 && fields !== 7) {
    return { ok: false, error: `cron: five fields (minute hour day-of-month month day-of-week) or seven, not ${fields}` };
  }
  if (!CRON_TEXT.test(cron)) return { ok: false, error: "cron may hold only digits, letters, *, /, , and -" };
  const versionText = d.workflowVersion.trim();
  const workflowVersion = versionText === "" ? 0 : Number(versionText);
  if (!Number.isInteger(workflowVersion) || workflowVersion < 0) {
    return { ok: false, error: "version: a whole number, or empty for the latest at each start" };
  }
  const input = parseInput(d.input);
  if (typeof input === "string") return { ok: false, error: input };
  return {
    ok: true,
    body: { workflowName, workflowVersion, cron, timeZone: d.timeZone.trim() || "UTC", input, paused: d.paused, note: d.note.trim() },
  };
}

/** The input typed as JSON: an object (empty text: `{}`), or why it is not one. */
export function parseInput(text: string): Record<string, unknown> | string {
  if (!text.trim()) return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return `input is not JSON: ${e instanceof Error ? e.message : String(e)}`;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) return "input must be a JSON object ({...})";
  return value as Record<string, unknown>;
}
