import { describe, expect, it } from "vitest";
import { checkSchedule, parseInput, type ScheduleDraft } from "./schedules";

const draft = (d: Partial<ScheduleDraft>): ScheduleDraft => ({
  workflowName: "publish", workflowVersion: "", cron: "0 9 * * 1-5", timeZone: "Europe/Berlin", input: "", paused: false, note: "", ...d,
});

describe("checkSchedule", () => {
  it("makes the request: spaces of the cron tidied, empty version the latest, empty input {}", () => {
    expect(checkSchedule(draft({ cron: "  0  9 * *   1-5 ", note: " weekdays " }))).toEqual({
      ok: true,
      body: { workflowName: "publish", workflowVersion: 0, cron: "0 9 * * 1-5", timeZone: "Europe/Berlin", input: {}, paused: false, note: "weekdays" },
    });
    expect(checkSchedule(draft({ workflowVersion: "3", timeZone: " ", input: '{"region": "eu"}', paused: true, cron: "0 0 9 * * MON-FRI 2030" }))).toMatchObject({
      ok: true,
      body: { workflowVersion: 3, timeZone: "UTC", input: { region: "eu" }, paused: true, cron: "0 0 9 * * MON-FRI 2030" },
    });
  });

  it("refuses what the API would refuse, before sending", () => {
    expect(checkSchedule(draft({ workflowName: "" }))).toEqual({ ok: false, error: "choose a workflow" });
    expect(checkSchedule(draft({ cron: "0 9 * *" }))).toMatchObject({ ok: false, error: expect.stringContaining("not 4") });
    expect(checkSchedule(draft({ cron: "" }))).toMatchObject({ ok: false, error: expect.stringContaining("not 0") });
    expect(checkSchedule(draft({ cron: "0 9 * * 1;2" }))).toMatchObject({ ok: false, error: expect.stringContaining("only digits") });
    expect(checkSchedule(draft({ workflowVersion: "1.5" }))).toMatchObject({ ok: false, error: expect.stringContaining("whole number") });
    expect(checkSchedule(draft({ workflowVersion: "-1" }))).toMatchObject({ ok: false, error: expect.stringContaining("whole number") });
    expect(checkSchedule(draft({ input: "[1]" }))).toEqual({ ok: false, error: "input must be a JSON object ({...})" });
  });
});

describe("parseInput", () => {
  it("reads a JSON object and names what is not one", () => {
    expect(parseInput(' {"a": [1, 2]} ')).toEqual({ a: [1, 2] });
    expect(parseInput("")).toEqual({});
    expect(parseInput("null")).toBe("input must be a JSON object ({...})");
    expect(parseInput('"text"')).toBe("input must be a JSON object ({...})");
    expect(parseInput("{a: 1}")).toMatch(/^input is not JSON: /);
  });
});
