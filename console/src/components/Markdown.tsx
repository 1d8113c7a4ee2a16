import ReactMarkdown from "react-markdown";

// Markdown to React elements: no raw HTML is ever inserted (skipHtml drops it, there is no
// dangerouslySetInnerHTML), and react-markdown's URL transform drops javascript: and other
// unsafe link targets. Links open in a new tab without handing it this page.
export function Markdown({ text }: { text: string }) {
  return (
    <div className="markdown">
      <ReactMarkdown
        skipHtml
        disallowedElements={["img"]}
        unwrapDisallowed
        components={{
          a: ({ href, children }) => (
            <a href={href} target="_blank" rel="noopener noreferrer">
              {children}
            </a>
          ),
        }}
      >
        {text}
      </ReactMarkdown>
    </div>
  );
}
