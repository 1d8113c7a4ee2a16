import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { BrowserRouter } from "react-router-dom";
import { App } from "./App";
import { ApiClient } from "./api/client";
import { ApiProvider } from "./api/context";
import "./styles.css";

const client = new ApiClient();

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <BrowserRouter basename="/console">
      <ApiProvider client={client}>
        <App />
      </ApiProvider>
    </BrowserRouter>
  </StrictMode>,
);
