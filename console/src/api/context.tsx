import { createContext, ReactNode, useContext, useEffect, useState } from "react";
import { ApiClient } from "./client";

const ApiContext = createContext<ApiClient | null>(null);

export function ApiProvider({ client, children }: { client: ApiClient; children: ReactNode }) {
  return <ApiContext.Provider value={client}>{children}</ApiContext.Provider>;
}

export function useApi(): ApiClient {
  const client = useContext(ApiContext);
  if (!client) throw new Error("useApi outside ApiProvider");
  return client;
}

/** Whether the client holds a session; re-renders on sign-in, sign-out and a failed refresh. */
export function useSignedIn(): boolean {
  const client = useApi();
  const [signedIn, setSignedIn] = useState(client.signedIn);
  useEffect(() => client.onChange(setSignedIn), [client]);
  return signedIn;
}
