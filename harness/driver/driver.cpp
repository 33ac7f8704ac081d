#include "harness/driver/driver.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>

#include "backends/backend.hpp"
#include "backends/gpu_routing.hpp"
#include "backends/sim/cost_model.hpp"
#include "harness/capacity/capacity.hpp"
#include "harness/core/agree.hpp"
#include "harness/core/error.hpp"
#include "harness/driver/resume.hpp"
#include "harness/placement/placement.hpp"
#include "harness/placement/planner.hpp"
#include "harness/report/progress.hpp"
#include "harness/report/results_writer.hpp"
#include "harness/report/table.hpp"
#include "harness/routing/router.hpp"
#include "harness/traffic/traffic.hpp"
#include "workloads/workload.hpp"

namespace moe {

std::string topology_json(const Topology& t) {
  std::ostringstream os;
  os.precision(17);
  os << "{\"name\":\"" << t.name << "\",\"nodes\":" << t.nodes
     << ",\"ranks_per_node\":" << t.ranks_per_node
     << ",\"intra_bandwidth_Bps\":" << t.intra.bandwidth_Bps
     << ",\"intra_latency_s\":" << t.intra.latency_s
     << ",\"inter_bandwidth_Bps\":" << t.inter.bandwidth_Bps
     << ",\"inter_latency_s\":" << t.inter.latency_s << ",\"nics_per_node\":" << t.nics_per_node
     << ",\"intra_node_bandwidth_Bps\":" << t.intra_node_bandwidth_Bps
     << ",\"shared_links\":" << (t.shared_links ? "true" : "false") << "}";
  return os.str();
}

namespace {

std::vector<std::string> gather_hosts(const Comm& world) {
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  MOE_MPI(MPI_Get_processor_name(name, &len));
  std::vector<char> all(static_cast<size_t>(world.size()) * MPI_MAX_PROCESSOR_NAME);
  MOE_MPI(MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(), MPI_MAX_PROCESSOR_NAME,
                        MPI_CHAR, world.raw()));
  std::vector<std::string> hosts;
  for (int r = 0; r < world.size(); ++r)
    hosts.emplace_back(all.data() + static_cast<size_t>(r) * MPI_MAX_PROCESSOR_NAME);
  return hosts;
}

}  // namespace

RunOutput run_pipeline(const RunConfig& cfg, const Comm& world, const RunOptions& options) {
  auto args_of = [&](const std::string& instance) {
    return cfg.router_args.count(instance) ? cfg.router_args.at(instance)
                                           : std::map<std::string, std::string>{};
  };
  const Topology topo = cfg.topology();
  const int32_t R = topo.ep_size();
  const int32_t L = cfg.layers;
  const int32_t ranks_here = R / world.size();  // EP (virtual) ranks this process hosts
  const int32_t first_rank = world.rank() * ranks_here;
  const bool global_capacity = cfg.capacity_scope == "global";

  WorkloadSetup ws{cfg.experts,         cfg.layers,  cfg.top_k, R,
                   cfg.tokens_per_rank, cfg.seq_len, cfg.seed};
  ws.trace_file = cfg.trace_file;
  ws.trace_tail = cfg.trace_tail;
  ws.tail_prior = cfg.tail_prior;
  ws.tail_noise = cfg.tail_noise;
  ws.comm = world.raw();
  ws.need_logits = false;
  for (const auto& name : cfg.routers)
    ws.need_logits = ws.need_logits || router_registry_name(name) != "recorded";
  auto workload =
      make_workload(cfg.workload, ws,
                    cfg.workload_args.count(cfg.workload) ? cfg.workload_args.at(cfg.workload)
                                                          : std::map<std::string, std::string>{});
  RouterSetup rs{cfg.experts, cfg.top_k, cfg.layers, topo};
  std::vector<std::unique_ptr<Router>> routers;
  for (const auto& name : cfg.routers)
    routers.push_back(make_router(name, rs,
                                  cfg.router_args.count(name)
                                      ? cfg.router_args.at(name)
                                      : std::map<std::string, std::string>{}));
  RunOutput out;
  out.routers = cfg.routers;
  // --resume: where the file stands (collective; input errors alike on every rank).
  const ResumePoint resume =
      cfg.resume && !cfg.out.empty() ? prepare_resume(cfg, world) : ResumePoint{};
  if (cfg.resume && options.console && world.root() && !resume.resume)
    std::printf("moebench: %s\n", resume.note.c_str());
  if (resume.resume && resume.steps_done == cfg.steps &&
      resume.status == "complete") {  // nothing to do; the file stays as it is
    if (options.console && world.root())
      std::printf("moebench: %s is complete (%d steps); nothing to resume\n", cfg.out.c_str(),
                  cfg.steps);
    out.first_step = cfg.steps;
    return out;
  }
  // --route-on gpu: the CUDA implementation routes; the CPU router object still validated the
  // knobs.
  std::vector<const GpuRouteFn*> gpu_route(routers.size(), nullptr);
  if (cfg.route_on == "gpu")
    for (size_t ri = 0; ri < routers.size(); ++ri) {
      const auto* e = GpuRouteRegistry::instance().find(router_registry_name(cfg.routers[ri]));
      if (!e)
        throw InputError("--route-on gpu: router " + cfg.routers[ri] +
                         " has no GPU implementation");
      gpu_route[ri] = &e->factory;
    }
  // One planner per router: load-aware placements follow that router's own loads.
  const PlannerSpec plan_spec = planner_spec(cfg);
  std::vector<PlacementPlanner> planners(routers.size(), PlacementPlanner(plan_spec));
  out.placement =
      planners.empty() ? make_placement(cfg.placement, plan_spec.setup) : planners[0].previous(0);
  if (resume.resume) unpack_state(resume.state, cfg.out, routers, cfg.routers, planners);
  BackendSetup backend_setup;
  backend_setup.payload_bytes = cfg.payload_bytes();
  backend_setup.warmup = cfg.warmup;
  backend_setup.iters = cfg.iters;
  backend_setup.algo = cfg.a2a_algo;
  backend_setup.corrupt_token = options.corrupt_token;
  auto backend = make_backend(cfg.backend, backend_setup, topo, world);
  const bool measured_backend = cfg.backend != "sim";
  const CapacitySpec cap_spec{cfg.capacity_factor, cfg.top_k, cfg.drop_policy,
                              parse_capacity_rounding(cfg.capacity_rounding)};
  const TrafficSpec traffic_spec{parse_dedup(cfg.dedup), cfg.payload_bytes(), 8,
                                 parse_replica_select(cfg.replica_select), cfg.seed};
  const A2aModel a2a_model =
      a2a_model_for(cfg.a2a_algo, cfg.dedup);  // the cost model of this exchange

  // The first batch tells what the source provides: routers refuse inputs they cannot use, and
  // labelled workloads add the transition figures. One rank tells it (a whole batch may be large).
  TokenBatch batch;
  agree(world, [&] {
    workload->generate_ranks(0, 0, first_rank, 1, batch);
  });  // a bad row may be one process's
  // A completed tail: the routers that would refuse the bare top-k are the ones whose figures
  // depend on it (the others see the recorded experts only).
  std::vector<int> tail_used(routers.size(), 0);
  for (size_t ri = 0; ri < routers.size(); ++ri) {
    if (batch.count_only && !routers[ri]->replays_recorded())
      throw InputError("router " + cfg.routers[ri] + " cannot run on the count-only trace " +
                       cfg.trace_file +
                       ": it holds per-expert counts per step and layer, no per-token logits or "
                       "choices to route "
                       "(only recorded replays it)");
    const std::string missing = routers[ri]->missing_input(batch);
    if (!missing.empty())
      throw InputError("router " + cfg.routers[ri] + " cannot run on workload " + cfg.workload +
                       ": it needs " + missing +
                       (batch.recorded_k > 0 && batch.tail_model.empty() &&
                                missing.find("logits") != std::string::npos
                            ? "; or complete the trace with --trace-tail mass|profile"
                            : ""));
    if (!batch.tail_model.empty()) {
      batch.full_logits = false;
      tail_used[ri] = !routers[ri]->missing_input(batch).empty();
      batch.full_logits = true;
    }
  }
  const bool labelled = !batch.domain.empty();
  // Transition figures against the router's full distribution where it has one over real logits
  // (CPU routing: the router object holds the scores); among-chosen figures otherwise.
  std::vector<uint8_t> full_distribution(routers.size(), 0);
  std::vector<std::vector<std::string>> figure_names;
  for (size_t ri = 0; ri < routers.size(); ++ri) {
    full_distribution[ri] =
        routers[ri]->has_full_distribution() && batch.full_logits && batch.tail_model.empty() &&
        !gpu_route[ri];  // a completed tail is not the recorded distribution: among-chosen figures
    figure_names.push_back(routers[ri]->figure_names());
    if (labelled)
      for (const auto& n : transition_figure_names(full_distribution[ri] != 0))
        figure_names.back().push_back(n);
  }
  out.figure_names = figure_names;

  std::unique_ptr<ResultsWriter> writer;
  if (!cfg.out.empty()) {
    ResultsFileInfo info;
    info.path = cfg.out;
    info.force = cfg.force ||
                 (cfg.resume &&
                  !resume.resume);  // --resume of a file without a complete step: start it again
    if (resume.resume) {
      info.resume_steps_done = resume.steps_done;
      info.resume_note = resume.note;
    }
    info.config_json = cfg.to_json();
    info.command_line = cfg.command_line;
    info.topology_json = topology_json(topo);
    if (cfg.workload != "trace")
      info.workload_source = "synthetic workload " + cfg.workload;
    else if (!batch.tail_model.empty())
      info.workload_source = "assignment trace " + cfg.trace_file +
                             ": recorded replays it; other routers see the recorded top-" +
                             std::to_string(batch.recorded_k) +
                             " with the unrecorded logits completed by --trace-tail " +
                             batch.tail_model + " (workloads/TRACE_FORMAT.md, Tail completion)";
    else if (batch.count_only)
      info.workload_source =
          "count-only trace " + cfg.trace_file +
          ": per-expert counts per step and layer, each assignment replayed as a token with one "
          "expert; source ranks attributed by --count-sources " +
          cfg.count_sources + " (workloads/TRACE_FORMAT.md)";
    else if (batch.recorded_k > 0)
      info.workload_source =
          "assignment trace " + cfg.trace_file +
          ": recorded replays it; other routers see logits reconstructed from the recorded top-" +
          std::to_string(batch.recorded_k) + " (workloads/TRACE_FORMAT.md)";
    else
      info.workload_source = "logit trace " + cfg.trace_file;
    if (batch.count_only)
      info.count_sources =
          cfg.count_sources +
          ": each EP rank sends floor or ceil of demand/R tokens to each expert (a "
          "step's assignments, ordered by expert, dealt round-robin: assignment j from "
          "rank j mod R); the trace records no source ranks";
    info.routers = cfg.routers;
    info.trace_tail = batch.tail_model.empty() ? "none" : batch.tail_model;
    info.trace_tail_params = workload->tail_params();
    info.tail_used = tail_used;
    info.figure_names = figure_names;
    info.hosts = gather_hosts(world);
    info.steps = cfg.steps;
    info.layers = cfg.layers;
    info.experts = cfg.experts;
    info.topology = topo;
    info.placement = out.placement;
    info.save_dispatch_matrix = cfg.save_dispatch_matrix();
    info.measured = measured_backend;
    for (const auto& p : planners) info.train_balancedness.push_back(p.train_balancedness());
    info.first_rank = first_rank;
    info.num_ranks = ranks_here;
    if (resume
            .resume)  // keep only the rows steps_done vouches for (a kill mid-flush may leave more)
      agree(world, [&] {
        if (world.root()) rebuild_for_resume(info, resume.steps_done);
      });
    writer = std::make_unique<ResultsWriter>(info, world);
  }
  if (options.console && world.root()) {
    const std::string tokens = cfg.workload == "trace"
                                   ? "trace " + cfg.trace_file + " (" +
                                         std::to_string(batch.global_tokens) + " tokens in step 0)"
                                   : std::to_string(cfg.tokens_per_rank) + " tokens/rank";
    std::printf(
        "moebench: workload %s, E=%d k=%d, %d layers x %d steps, %s, EP %d = %d nodes x %d ranks "
        "(%d processes), capacity factor %g (%s, %s), placement %s, dedup %s, backend %s\n",
        cfg.workload.c_str(), cfg.experts, cfg.top_k, L, cfg.steps, tokens.c_str(), R, topo.nodes,
        topo.ranks_per_node, world.size(), cfg.capacity_factor, cfg.drop_policy.c_str(),
        cfg.capacity_scope.c_str(), cfg.placement.c_str(), cfg.dedup.c_str(), cfg.backend.c_str());
    if (resume.resume) std::printf("moebench: %s: %s\n", cfg.out.c_str(), resume.note.c_str());
    std::fflush(stdout);
  }

  const size_t NR = routers.size();
  // Chunkable routers only (and no transition figures): generate and route the hosted ranks in
  // chunks of about options.chunk_tokens tokens, keeping only the plans; the logits of 1024 ranks x
  // 8192 tokens x 256 experts (8 GiB) then never sit in memory at once.
  const int64_t kChunkTokens = std::max<int64_t>(1, options.chunk_tokens);
  bool chunked = !labelled && cfg.route_on == "cpu";
  for (const auto& r : routers) chunked = chunked && r->chunkable();
  const int64_t rank_tokens = std::max<int64_t>(1, batch.num_tokens);  // tokens of the first rank
  const int32_t chunk_ranks =
      chunked ? static_cast<int32_t>(std::clamp<int64_t>(kChunkTokens / rank_tokens, 1, ranks_here))
              : ranks_here;
  chunked = chunked && chunk_ranks < ranks_here;
  std::vector<RoutingPlan> plans(chunked ? NR : 0);
  std::vector<double> route_s(NR, 0.0);
  TokenBatch layout;  // chunked: the rank layout of all hosted ranks (no logits)
  out.records.assign(NR, {});
  out.matrices.assign(NR, {});
  std::vector<std::vector<StepLayerMetrics>> step_records(
      NR, std::vector<StepLayerMetrics>(static_cast<size_t>(L)));
  // Matrices of a whole step are kept only when the file stores them; otherwise one is reused.
  const bool step_matrices_needed = (writer && cfg.save_dispatch_matrix()) || options.keep_history;
  std::vector<std::vector<TrafficMatrix>> step_matrices(
      NR, std::vector<TrafficMatrix>(step_matrices_needed ? static_cast<size_t>(L) : 1));
  std::vector<SummaryAccumulator> summaries;
  for (const auto& name : cfg.routers) summaries.emplace_back(name);
  RoutingPlan route_plan;
  CapacityResult cap;
  TrafficMatrix combine;
  DispatchDetail detail;
  Progress progress(cfg.progress, static_cast<int64_t>(cfg.steps) * L, world.root());

  if (options.on_start) options.on_start();
  // From here an error may hit one rank only: abort the job before unwinding, whose destructors
  // (the HDF5 file close, communicators) are collective and would wait for the other ranks.
  try {
    out.first_step = resume.steps_done;
    std::vector<char> state;  // this process's checkpoint after each step
    for (int32_t step = resume.steps_done; step < cfg.steps; ++step) {
      for (int32_t layer = 0; layer < L; ++layer) {
        std::fill(route_s.begin(), route_s.end(), 0.0);
        if (!chunked) {
          workload->generate_ranks(step, layer, first_rank, ranks_here, batch);
        } else {
          for (auto& p : plans) p.reset(0, cfg.experts, 0);
          for (auto& r : routers) r->begin_chunks(layer, first_rank, ranks_here);
          layout.rank_offsets.assign(1, 0);
          for (int32_t c0 = 0; c0 < ranks_here; c0 += chunk_ranks) {
            const int32_t nc = std::min(chunk_ranks, ranks_here - c0);
            workload->generate_ranks(step, layer, first_rank + c0, nc, batch);
            if (c0 == 0) layout.first_token = batch.first_token;
            const int64_t base = layout.rank_offsets.back();
            for (int32_t i = 1; i <= nc; ++i)
              layout.rank_offsets.push_back(base + batch.rank_offsets[i]);
            for (size_t ri = 0; ri < NR; ++ri) {
              const auto t0 = std::chrono::steady_clock::now();
              routers[ri]->route_chunk(batch, route_plan);
              route_s[ri] +=
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
              RoutingPlan& all = plans[ri];  // append this chunk's plan
              const int64_t a0 = all.assignments();
              for (int64_t t = 1; t <= route_plan.num_tokens; ++t)
                all.offsets.push_back(a0 + route_plan.offsets[t]);
              all.expert.insert(all.expert.end(), route_plan.expert.begin(),
                                route_plan.expert.end());
              all.weight.insert(all.weight.end(), route_plan.weight.begin(),
                                route_plan.weight.end());
              all.num_tokens += route_plan.num_tokens;
            }
          }
          for (size_t ri = 0; ri < NR; ++ri) {
            const auto t0 = std::chrono::steady_clock::now();
            routers[ri]->finish_chunks(world);
            route_s[ri] +=
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          }
          layout.step = step;
          layout.layer = layer;
          layout.num_experts = cfg.experts;
          layout.num_tokens = layout.rank_offsets.back();
          layout.global_tokens = batch.global_tokens;
          layout.first_rank = first_rank;
          layout.tokens_per_rank = 0;
        }
        const TokenBatch& tokens =
            chunked ? layout : batch;  // whose rank layout the accounting uses
        const int64_t global_tokens = tokens.global_tokens;
        for (size_t ri = 0; ri < NR; ++ri) {
          StepLayerMetrics& m = step_records[ri][layer];
          m = StepLayerMetrics{};
          if (!chunked) {
            const auto t0 = std::chrono::steady_clock::now();
            if (gpu_route[ri])
              (*gpu_route[ri])(batch, cfg.top_k, args_of(cfg.routers[ri]), route_plan);
            else
              routers[ri]->route(batch, world, route_plan);
            route_s[ri] =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          }
          RoutingPlan& plan = chunked ? plans[ri] : route_plan;
          m.router_s = world.max(route_s[ri]);
          m.figures = routers[ri]->figures();
          if (labelled) {
            const Router& router = *routers[ri];
            const FullScoresFn scores = [&](int64_t t, float* row) {
              router.full_scores(batch, t, row);
            };
            const auto tf =
                transition_figures(batch, plan, world, full_distribution[ri] ? &scores : nullptr);
            m.figures.insert(m.figures.end(), tf.begin(), tf.end());
          }
          if (global_capacity) {
            apply_capacity(plan, cap_spec, global_tokens, world, cap);
          } else {  // per EP rank: the counts are this process's, make them global
            apply_capacity_per_rank(plan, cap_spec, tokens, cap);
            world.sum(cap.expert_demand);
            world.sum(cap.expert_load);
            cap.dropped_assignments = world.sum(cap.dropped_assignments);
            cap.dropped_tokens = world.sum(cap.dropped_tokens);
            cap.capacity = world.max(cap.capacity);
          }
          routers[ri]->observe_kept(layer, cap.expert_load);
          fill_load_metrics(plan, cap, global_tokens, cfg.top_k, world, m);
          TrafficMatrix& dispatch = step_matrices[ri][step_matrices_needed ? layer : 0];
          dispatch.reset(R);
          const Placement& placement = planners[ri].placement(layer, cap.expert_demand);
          detail.reset(R, topo.nodes, cfg.experts);
          account_dispatch(plan, cap.kept, tokens, placement, topo, traffic_spec, dispatch,
                           &detail);
          world.sum(dispatch.tokens);
          world.sum(dispatch.bytes);
          for (auto* v : {&detail.rank_assignments, &detail.ranks_per_token_hist,
                          &detail.nodes_per_token_hist, &detail.expert_bytes})
            world.sum(*v);
          combine_from_dispatch(dispatch, cfg.payload_bytes(), combine);
          fill_traffic_metrics(dispatch, combine, topo, m);
          m.padding_bytes = padding_bytes(m.capacity, cfg.experts, global_capacity ? 1 : R,
                                          m.kept_assignments, cfg.payload_bytes());
          const ModelTime md = model_alltoall(dispatch, topo, a2a_model);
          const ModelTime mc = model_alltoall(combine, topo, a2a_model);
          m.model_dispatch_s = md.seconds;
          m.model_combine_s = mc.seconds;
          m.model_lower_bound_dispatch_s = md.lower_bound_s;
          m.model_lower_bound_combine_s = mc.lower_bound_s;
          m.algbw_GBps = md.algbw_GBps;
          m.busbw_GBps = md.busbw_GBps;
          m.bottleneck_rank = md.bottleneck_rank;
          m.bottleneck_link = static_cast<int64_t>(md.bottleneck_link);
          fill_detail_metrics(detail, m);
          m.expert_of_slot.assign(placement.expert_of_slot.begin(), placement.expert_of_slot.end());
          m.replication_factor = static_cast<double>(placement.physical_experts()) / cfg.experts;
          m.placement_balancedness = placement_balancedness(
              placement, std::vector<double>(cap.expert_demand.begin(), cap.expert_demand.end()));
          m.replaced_copies = planners[ri].moved_copies(layer);
          m.replacement_bytes = m.replaced_copies * cfg.expert_bytes();
          if (m.replaced_copies > 0) {  // the same traffic under the placement it replaced
            TrafficMatrix before, before_combine;
            before.reset(R);
            DispatchDetail before_detail;
            before_detail.reset(R, topo.nodes, cfg.experts);
            account_dispatch(plan, cap.kept, tokens, planners[ri].previous(layer), topo,
                             traffic_spec, before, &before_detail);
            world.sum(before.tokens);
            world.sum(before.bytes);
            world.sum(before_detail.rank_assignments);
            m.balancedness_gain =
                m.gpu_balancedness - mean_over_max(before_detail.rank_assignments);
            combine_from_dispatch(before, cfg.payload_bytes(), before_combine);
            m.a2a_saved_s = model_alltoall(before, topo, a2a_model).seconds +
                            model_alltoall(before_combine, topo, a2a_model).seconds - md.seconds -
                            mc.seconds;
          }
          const ExchangeResult ex = backend->exchange(dispatch, combine, topo, world);
          if (ex.measured) {
            m.measured_dispatch_s = ex.dispatch_s;
            m.measured_combine_s = ex.combine_s;
            m.measured_bytes_moved = ex.bytes_moved;
            if (ex.dispatch_s >
                0) {  // nccl-tests: algbw = bytes per rank / time, busbw = algbw (R-1)/R
              m.measured_algbw_GBps = static_cast<double>(ex.bytes_moved) / R / ex.dispatch_s / 1e9;
              m.measured_busbw_GBps = m.measured_algbw_GBps * (R - 1) / R;
              // Bytes that left their rank: the moved bytes scaled by the non-self share of the
              // copies.
              const int64_t self_copies = [&] {
                int64_t n = 0;
                for (int32_t r = 0; r < R; ++r) n += dispatch.tok(r, r);
                return n;
              }();
              const double nonself_share =
                  m.dispatch_copies > 0 ? static_cast<double>(m.dispatch_copies - self_copies) /
                                              static_cast<double>(m.dispatch_copies)
                                        : 0.0;
              m.measured_nonself_algbw_GBps =
                  static_cast<double>(ex.bytes_moved) * nonself_share / R / ex.dispatch_s / 1e9;
            }
            m.rank_dispatch_s = ex.rank_dispatch_s;
            m.rank_combine_s = ex.rank_combine_s;
            m.tokens_sent = ex.tokens_sent;
            m.tokens_received = ex.tokens_received;
            m.tokens_lost = ex.tokens_lost;
            m.tokens_corrupted = ex.tokens_corrupted;
          }
        }
        progress.update(static_cast<int64_t>(step) * L + layer + 1,
                        "step " + std::to_string(step + 1) + "/" + std::to_string(cfg.steps));
      }
      for (auto& r : routers) r->end_step(world);
      for (size_t ri = 0; ri < NR; ++ri) {
        std::vector<std::vector<int64_t>> demand(static_cast<size_t>(L));
        for (int32_t layer = 0; layer < L; ++layer)
          demand[layer] = step_records[ri][layer].expert_demand;
        planners[ri].end_step(step, demand);
      }
      if (writer) {
        state = pack_state(routers, cfg.routers, planners);
        try {
          writer->write_step(step, step_records, step_matrices, &state);
        } catch (const std::exception& e) {
          throw_write_failure(cfg.out, step, e);
        }
        if (world.root()) check_out_exists(cfg.out, step + 1);
      }
      // Integrity: the only acceptable figure for lost and corrupted copies is 0. The step is in
      // the file (status partial) before the run stops.
      for (size_t ri = 0; ri < NR; ++ri)
        for (int32_t layer = 0; layer < L; ++layer) {
          const auto& m = step_records[ri][layer];
          for (size_t r = 0; r < m.tokens_lost.size(); ++r)
            if (m.tokens_lost[r] != 0 || m.tokens_corrupted[r] != 0)
              throw CollectiveError("integrity check failed: router " + cfg.routers[ri] +
                                    ", step " + std::to_string(step) + ", layer " +
                                    std::to_string(layer) + ", rank " + std::to_string(r) + ": " +
                                    std::to_string(m.tokens_lost[r]) + " token copies lost, " +
                                    std::to_string(m.tokens_corrupted[r]) + " corrupted");
        }
      for (size_t ri = 0; ri < NR; ++ri) {
        for (const auto& m : step_records[ri]) summaries[ri].add(m);
        if (!options.keep_history) continue;
        out.records[ri].insert(out.records[ri].end(), step_records[ri].begin(),
                               step_records[ri].end());
        out.matrices[ri].insert(out.matrices[ri].end(), step_matrices[ri].begin(),
                                step_matrices[ri].end());
      }
      // SIGTERM/SIGINT on any process: every process stops after this step (agreed collectively).
      if (step + 1 < cfg.steps) {
        out.stop_signal = static_cast<int>(world.max(static_cast<int64_t>(stop_signal())));
        if (out.stop_signal != 0) {
          if (world.root())
            std::fprintf(
                stderr, "moebench: %s: stopping after step %d of %d%s\n",
                strsignal(out.stop_signal), step + 1, cfg.steps,
                cfg.out.empty()
                    ? ""
                    : ("; " + cfg.out +
                       " says status = interrupted: add --resume to the same command to finish it")
                          .c_str());
          break;
        }
      }
    }
    progress.done();
    if (writer) writer->finish(out.stop_signal ? "interrupted" : "");
  } catch (const std::exception& e) {
    if (world.size() > 1 && !dynamic_cast<const CollectiveError*>(&e)) {
      const auto* input = dynamic_cast<const InputError*>(&e);
      std::fprintf(stderr, "moebench: error: %s\n", e.what());
      MPI_Abort(world.raw(), input ? 2 : 1);
    }
    throw;
  }
  for (const auto& acc : summaries) out.summaries.push_back(acc.result());
  if (options.console && world.root()) {
    if (out.first_step > 0)
      std::printf(
          "summary of steps %d..%d (this run; `moebench report %s` summarises the whole file):\n",
          out.first_step + 1, cfg.steps, cfg.out.c_str());
    std::printf("%s", format_summary_table(out.summaries).c_str());
    if (!cfg.out.empty()) std::printf("results: %s\n", cfg.out.c_str());
    std::fflush(stdout);
  }
  return out;
}

}  // namespace moe
