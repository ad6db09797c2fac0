import CarillonBench
import Foundation
import FoundationXML
import Testing

@Suite struct SVGPlotTests {
    let twoSeries = LinePlot(
        title: "Latency", xLabel: "load", yLabel: "µs",
        series: [
            PlotSeries(name: "a", coordinates: [(1, 10), (2, 20), (3, 15)]),
            PlotSeries(name: "b", coordinates: [(1, 30), (2, 35), (3, 50)])
        ])

    @Test func lineplotIsStandaloneSVGWithOnePolylinePerSeries() throws {
        let svg = twoSeries.svg()
        #expect(svg.hasPrefix("<?xml version=\"1.0\""))
        #expect(svg.contains("xmlns=\"http://www.w3.org/2000/svg\""))
        let root = try SVGInspection.root(svg)
        #expect(root.localName == "svg")
        for name in ["width", "height", "viewBox"] { #expect(SVGInspection.attribute(name, of: root) != nil) }
        let background = try #require(SVGInspection.elements("rect", in: root).first)
        #expect(SVGInspection.attribute("fill", of: background) == "#FFFFFF")
        #expect(SVGInspection.attribute("width", of: background) == SVGInspection.attribute("width", of: root))

        let polylines = SVGInspection.elements("polyline", in: root)
        #expect(polylines.count == 2)
        #expect(polylines.map { (SVGInspection.attribute("points", of: $0) ?? "").split(separator: " ").count } == [3, 3])
        let colours = Set(polylines.compactMap { SVGInspection.attribute("stroke", of: $0) })
        #expect(colours.count == 2)
        #expect(SVGInspection.texts(class: "legend", in: root) == ["a", "b"])
        #expect(SVGInspection.texts(class: "title", in: root) == ["Latency"])
        #expect(SVGInspection.texts(class: "axis-label", in: root) == ["load", "µs"])
    }

    @Test func higherValuesAreDrawnHigher() throws {
        let root = try SVGInspection.root(twoSeries.svg())
        let points = SVGInspection.elements("polyline", in: root).map { line in
            (SVGInspection.attribute("points", of: line) ?? "").split(separator: " ").map { pair in
                pair.split(separator: ",").map { Double($0)! }
            }
        }
        // Series a: 10, 20, 15. SVG y grows downwards.
        #expect(points[0][1][1] < points[0][0][1])
        #expect(points[0][2][1] > points[0][1][1])
        #expect(points[0][0][0] < points[0][1][0])
    }

    @Test func textIsEscaped() throws {
        let plot = LinePlot(
            title: "p99 < 1 ms & \"fast\"", xLabel: "x <x>", yLabel: "it's",
            series: [PlotSeries(name: "A&B <c>", coordinates: [(1, 1), (2, 2)])])
        let svg = plot.svg()
        #expect(svg.contains("p99 &lt; 1 ms &amp; &quot;fast&quot;"))
        #expect(!svg.contains("A&B"))
        let root = try SVGInspection.root(svg)
        #expect(SVGInspection.texts(class: "title", in: root) == ["p99 < 1 ms & \"fast\""])
        #expect(SVGInspection.texts(class: "legend", in: root) == ["A&B <c>"])
        #expect(SVGInspection.texts(class: "axis-label", in: root) == ["x <x>", "it's"])

        let bars = BarPlot(title: "<&>", yLabel: "µs", groups: ["a&b"], series: [BarSeries(name: "<p50>", values: [1])])
        let barRoot = try SVGInspection.root(bars.svg())
        #expect(SVGInspection.texts(class: "title", in: barRoot) == ["<&>"])
        #expect(SVGInspection.texts(class: "tick-x", in: barRoot) == ["a&b"])
    }

    @Test func logTicksAreDecades() throws {
        let plot = LinePlot(
            title: "", xLabel: "", yLabel: "", yScale: .log10,
            series: [PlotSeries(name: "s", coordinates: [(1, 3), (2, 40), (3, 4000)])])
        let root = try SVGInspection.root(plot.svg())
        #expect(SVGInspection.texts(class: "tick-y", in: root) == ["1", "10", "100", "1,000", "10,000"])

        let small = LinePlot(
            title: "", xLabel: "", yLabel: "", xScale: .log10, yScale: .log10,
            series: [PlotSeries(name: "s", coordinates: [(0.02, 150), (0.5, 180)])])
        let smallRoot = try SVGInspection.root(small.svg())
        #expect(SVGInspection.texts(class: "tick-x", in: smallRoot) == ["0.01", "0.1", "1"])
        #expect(SVGInspection.texts(class: "tick-y", in: smallRoot) == ["100", "1,000"])
    }

    @Test func linearTicksAreNiceAndCoverTheData() throws {
        for (low, high) in [(0.0, 97.0), (13.0, 1234.0), (0.1, 0.73), (-40.0, 260.0), (5.0, 5.0)] {
            let plot = LinePlot(
                title: "", xLabel: "", yLabel: "", series: [PlotSeries(name: "s", coordinates: [(low, low), (high, high)])],
                yIncludesZero: false)
            let root = try SVGInspection.root(plot.svg())
            for labels in [SVGInspection.texts(class: "tick-y", in: root), SVGInspection.texts(class: "tick-x", in: root)] {
                let values = labels.map { Double($0.replacingOccurrences(of: ",", with: ""))! }
                #expect(values.count >= 2, "\(labels)")
                #expect(values.first! <= low && values.last! >= high, "\(labels) do not cover \(low)…\(high)")
                let steps = zip(values.dropFirst(), values).map { $0 - $1 }
                let step = steps[0]
                #expect(steps.allSatisfy { abs($0 - step) < step * 1e-6 }, "\(labels)")
                let mantissa = step / pow(10, log10(step).rounded(.down))
                #expect([1.0, 2.0, 5.0].contains { abs($0 - mantissa) < 1e-6 }, "step \(step) of \(labels)")
            }
        }
    }

    @Test func unplottablePointsAreSkipped() throws {
        let plot = LinePlot(
            title: "", xLabel: "", yLabel: "", xScale: .log10, yScale: .log10,
            series: [
                PlotSeries(
                    name: "s",
                    coordinates: [(1, 1), (0, 5), (-1, 5), (2, 0), (3, -4), (.nan, 1), (4, .infinity), (5, 50), (.infinity, 2)])
            ])
        let root = try SVGInspection.root(plot.svg())
        let polyline = try #require(SVGInspection.elements("polyline", in: root).first)
        let points = (SVGInspection.attribute("points", of: polyline) ?? "").split(separator: " ")
        #expect(points.count == 2)
        #expect(!plot.svg().contains("nan") && !plot.svg().contains("inf"))
    }

    @Test func emptyAndSinglePointSeries() throws {
        let empty = LinePlot(title: "Nothing", xLabel: "x", yLabel: "y", series: [])
        let emptyRoot = try SVGInspection.root(empty.svg())
        #expect(SVGInspection.elements("polyline", in: emptyRoot).isEmpty)
        #expect(SVGInspection.texts(class: "no-data", in: emptyRoot) == ["No data"])

        let plot = LinePlot(
            title: "", xLabel: "", yLabel: "", yScale: .log10,
            series: [
                PlotSeries(name: "empty", points: []), PlotSeries(name: "one", coordinates: [(3, 7)]),
                PlotSeries(name: "only zero", coordinates: [(1, 0)])
            ],
            showsMarkers: false)
        let root = try SVGInspection.root(plot.svg())
        #expect(SVGInspection.elements("polyline", in: root).count == 1)
        #expect(SVGInspection.elements("circle", in: root).count == 1)
        #expect(SVGInspection.texts(class: "legend", in: root) == ["empty", "one", "only zero"])
    }

    @Test func customTicksReplaceTheAutomaticOnes() throws {
        let plot = LinePlot(
            title: "", xLabel: "", yLabel: "", xScale: .log10,
            series: [PlotSeries(name: "s", coordinates: [(1, 1), (500, 2)])],
            xTickLabels: [PlotTick(value: 1, label: "0%"), PlotTick(value: 10, label: "90%"), PlotTick(value: 1000, label: "99.9%")])
        let root = try SVGInspection.root(plot.svg())
        #expect(SVGInspection.texts(class: "tick-x", in: root) == ["0%", "90%", "99.9%"])
    }

    @Test func manySeriesGetDistinctStyles() throws {
        let series = (0..<12).map { i in PlotSeries(name: "series \(i)", coordinates: [(0, Double(i)), (1, Double(i + 1))]) }
        let root = try SVGInspection.root(LinePlot(title: "", xLabel: "", yLabel: "", series: series).svg())
        let styles = SVGInspection.elements("polyline", in: root).map {
            "\(SVGInspection.attribute("stroke", of: $0) ?? "") \(SVGInspection.attribute("stroke-dasharray", of: $0) ?? "")"
        }
        #expect(Set(styles).count == 12)
    }

    @Test func barPlotHasABarAndALabelPerValue() throws {
        let plot = BarPlot(
            title: "Bars", yLabel: "µs", groups: ["none", "gated", "unpaced"],
            series: [
                BarSeries(name: "p50", values: [120, 130, 300]), BarSeries(name: "p99", values: [400, 600, .nan]),
                BarSeries(name: "p99.9", values: [950.5, 1200])
            ])
        let root = try SVGInspection.root(plot.svg())
        let bars = SVGInspection.elements("rect", in: root).filter { SVGInspection.attribute("class", of: $0) == "bar" }
        #expect(bars.count == 7)
        #expect(SVGInspection.texts(class: "tick-x", in: root) == ["none", "gated", "unpaced"])
        #expect(SVGInspection.texts(class: "legend", in: root) == ["p50", "p99", "p99.9"])
        let values = SVGInspection.texts(class: "value", in: root)
        #expect(values == ["120.0", "400.0", "950.5", "130.0", "600.0", "1,200", "300.0"])
        // Taller value, taller bar.
        let heights = bars.map { Double(SVGInspection.attribute("height", of: $0)!)! }
        #expect(heights[5] > heights[4] && heights[4] > heights[3])
        // The y axis reaches above the tallest bar.
        let ticks = SVGInspection.texts(class: "tick-y", in: root).map { Double($0.replacingOccurrences(of: ",", with: ""))! }
        #expect(ticks.first == 0 && ticks.last! >= 1200)
    }

    @Test func emptyBarPlotStillParses() throws {
        let root = try SVGInspection.root(BarPlot(title: "", yLabel: "", groups: [], series: []).svg())
        #expect(SVGInspection.texts(class: "no-data", in: root) == ["No data"])
    }
}
