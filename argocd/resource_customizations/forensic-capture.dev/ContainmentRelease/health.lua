-- Argo CD health of a ContainmentRelease (forensic-capture.dev/v1alpha1), from the status the controller writes.
--   Progressing: no status yet, or Pending (for example waiting for its capture to finish).
--   Degraded:    Failed: nothing to release, no such capture, or a restore AWS refused; the instance may still
--                be partly contained, and the status names what was restored so far.
--   Healthy:     Released: every recorded containment action restored.
local hs = {}

-- "Reason: message" from the status, leaving out whichever is empty. (Argo CD runs each kind's script on its
-- own, so this cannot be shared with the ForensicCapture script.)
local function describe(status)
  local parts = {}
  for _, part in ipairs({ status.reason or "", status.message or "" }) do
    if part ~= "" then
      table.insert(parts, part)
    end
  end
  return table.concat(parts, ": ")
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to pick up the release"
  return hs
end
if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(status)
  return hs
end
if status.phase == "Released" then
  hs.status = "Healthy"
  hs.message = status.message or "Released"
  return hs
end
hs.status = "Progressing"
local detail = describe(status)
if detail ~= "" then
  hs.message = status.phase .. ": " .. detail
else
  hs.message = status.phase
end
return hs
