// The HTML page of `keel report`: one self-contained file (inline CSS, inline
// script drawing SVG charts, the run data as inline JSON) that makes no
// network request, except /data.json polling when served live.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands/report_run.h"

namespace keel::cli::report {

// Longest series drawn per chart: longer ones are reduced to the minimum and
// maximum record of each of kMaxPoints/2 step buckets, so every point drawn
// (and shown on hover) is a recorded value, and spikes survive.
inline constexpr size_t kMaxPoints = 1200;

// The data the page draws, for all runs (one run, or several when comparing).
nlohmann::json page_data(const std::vector<RunData>& runs, bool live);

// The whole page. `live`: the page polls ./data.json every few seconds
// (served by `keel report --serve`) and redraws.
std::string render_html(const std::vector<RunData>& runs, bool live);

// Reduces (x, y) to at most max_points records, keeping the first and last
// and each bucket's minimum and maximum, in x order. Non-finite y are dropped.
void downsample_min_max(std::vector<double>& x, std::vector<double>& y, size_t max_points);

}  // namespace keel::cli::report
