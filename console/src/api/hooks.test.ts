import { describe, expect, it } from "vitest";
import { ApiError } from "./client";
import { messageOf } from "./hooks";

describe("messageOf", () => {
  it("says the problem's detail once, then the fields it did not name", () => {
    const problem = {
      status: 422,
      code: "validation_failed",
      detail: "/externalId: String should have at most 500 characters",
      errors: [
        { in: "body", pointer: "/externalId", detail: "String should have at most 500 characters" },
        { in: "body", pointer: "/title", detail: "String should match pattern" },
      ],
    };
    expect(messageOf(new ApiError(problem))).toBe(
      "/externalId: String should have at most 500 characters; /title String should match pattern",
    );
  });

  it("falls back to the title, and reads other errors", () => {
    expect(messageOf(new ApiError({ status: 404, title: "Not Found" }))).toBe("Not Found");
    expect(messageOf(new Error("the upload could not reach the gateway"))).toBe("the upload could not reach the gateway");
  });
});
