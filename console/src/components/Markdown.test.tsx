import { render } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { Markdown } from "./Markdown";

describe("Markdown", () => {
  it("renders markdown as elements", () => {
    const { container } = render(<Markdown text={"**bold** and a list:\n\n- one\n- two"} />);
    expect(container.querySelector("strong")?.textContent).toBe("bold");
    expect(container.querySelectorAll("li")).toHaveLength(2);
  });

  it("never inserts raw HTML, scripts or javascript: links", () => {
    const hostile =
      '<script>alert(1)</script><img src=x onerror="alert(2)"><b onclick="x()">hi</b>\n\n' +
      "[click](javascript:alert(3)) ![pic](http://evil.example/x.png)";
    const { container } = render(<Markdown text={hostile} />);
    expect(container.querySelector("script, img, b, [onerror], [onclick]")).toBeNull();
    const link = container.querySelector("a");
    expect(link?.getAttribute("href") ?? "").not.toMatch(/javascript:/i);
    expect(container.innerHTML).not.toMatch(/onerror|onclick|<script/i);
  });

  it("opens links in a new tab without handing it this page", () => {
    const { container } = render(<Markdown text="[docs](https://example.com/docs)" />);
    const link = container.querySelector("a")!;
    expect(link.getAttribute("href")).toBe("https://example.com/docs");
    expect(link.getAttribute("rel")).toBe("noopener noreferrer");
  });
});
