import type { PagedList } from "../api/hooks";

/** "Load more" under a paged list, while the API has a next page. */
export function LoadMore<T>({ list, what }: { list: PagedList<T>; what: string }) {
  if (!list.more) return null;
  return (
    <p className="load-more">
      <button type="button" onClick={list.loadMore} disabled={list.loadingMore} data-testid="load-more">
        {list.loadingMore ? `Loading more ${what}…` : `Load more ${what}`}
      </button>{" "}
      <span className="muted">{list.items.length} shown</span>
    </p>
  );
}
