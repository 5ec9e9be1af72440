-- Argo CD health of a ForensicCapture (forensic-capture.dev/v1alpha1), from the status the controller writes.
--   Progressing: no status yet, a status older than the spec (observedGeneration behind metadata.generation),
--                or steps still running / waiting (for the instance lock, for example).
--   Degraded:    a requested step failed or was skipped (condition Failed=True, phase Failed). A step never
--                recovers once failed (the spec is immutable), so this needs a responder's attention.
--   Healthy:     condition Ready=True: every requested step completed.
--   Suspended:   Ready reason AwaitingApproval: a CapturePolicy in Approval mode created the capture, and it
--                does nothing until a CaptureApproval names it (a person has to decide).
local hs = {}

local function condition(status, wanted)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

-- "Reason: message", or whichever of the two is present.
local function describe(c)
  local reason = c.reason or ""
  local message = c.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  return reason .. message
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to pick up the capture"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. generation
  return hs
end

local phase = status.phase or "Pending"
local failed = condition(status, "Failed")
if failed ~= nil and failed.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(failed)
  return hs
end
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Capture failed"
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = phase .. ": " .. (ready.message or "ready")
  return hs
end

if ready ~= nil and ready.reason == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = phase .. ": " .. describe(ready)
  return hs
end

hs.status = "Progressing"
if ready ~= nil and ready.reason ~= nil and ready.reason ~= "InProgress" then
  hs.message = phase .. ": " .. describe(ready)
else
  hs.message = phase
end
return hs
