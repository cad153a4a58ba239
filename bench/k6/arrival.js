// Plain GET, open model: RATE iterations per second for DURATION.
import http from "k6/http";

export const options = {
  scenarios: {
    arrival: {
      executor: "constant-arrival-rate",
      rate: Number(__ENV.RATE),
      timeUnit: "1s",
      duration: __ENV.DURATION,
      preAllocatedVUs: Number(__ENV.PREALLOCATED),
      maxVUs: Number(__ENV.MAX_VUS),
    },
  },
};

export default function () {
  http.get(__ENV.URL);
}
