// Lists the API pages (`pageSize`, `pageToken`, `nextPageToken`), read page by page: the first
// page at once, the next ones when the user asks ("Load more"), and every page read so far
// again when the list is refreshed, so a refresh never shrinks what the user has opened.

/** One page of a list: its items (under the list's own field) and the token of the next page
 * ("" on the last page). */
export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

/** `path` with `pageToken` set (an empty token: the first page). */
export function withPageToken(path: string, token: string): string {
  if (!token) return path;
  return `${path}${path.includes("?") ? "&" : "?"}pageToken=${encodeURIComponent(token)}`;
}

/** The items of `page` added after `items`. An item already there (the list moved between two
 * reads, so it came again on the next page) stays once, at its first place, in its newer copy. */
export function mergePage<T>(items: T[], page: T[], keyOf: (item: T) => string): T[] {
  const fresh = new Map(page.map((item) => [keyOf(item), item]));
  const merged = items.map((item) => {
    const key = keyOf(item);
    const newer = fresh.get(key);
    if (newer === undefined) return item;
    fresh.delete(key);
    return newer;
  });
  for (const item of page) {
    const key = keyOf(item);
    if (fresh.get(key) === item) {
      merged.push(item);
      fresh.delete(key);
    }
  }
  return merged;
}

export interface PagesRead<T> {
  items: T[];
  /** The token of the page after the last one read ("" when the list was read to its end). */
  nextPageToken: string;
  /** Pages read. */
  pages: number;
}

/** Read up to `count` pages of `path` from the first, following `nextPageToken`; stops early at
 * the list's last page. */
export async function readPages<T>(
  fetchPage: (path: string) => Promise<Page<T>>,
  path: string,
  count: number,
  keyOf: (item: T) => string,
): Promise<PagesRead<T>> {
  let items: T[] = [];
  let token = "";
  let pages = 0;
  do {
    const page = await fetchPage(withPageToken(path, token));
    items = mergePage(items, page.items, keyOf);
    token = page.nextPageToken;
    pages += 1;
  } while (token && pages < Math.max(1, count));
  return { items, nextPageToken: token, pages };
}
