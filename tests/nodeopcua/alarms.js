// node-opcua as an alarm client (OPC 10000-9): subscribe to the events of the Server object, see a condition
// become active, acknowledge it with the EventId of that event, see it acknowledged, then inactive.
//
// Plan (argv[2]): {endpoint, securityPolicy, securityMode, applicationUri, certificateFile, privateKeyFile, pkiDir,
//                  user: {name, password}, condition: <ConditionName>, comment, timeoutMs}
// Lines: {"event": "subscribed"} (the test may now raise the alarm), {"event": "alarm", ...fields} for each event
// of the condition, {"event": "acknowledged", status} after the Acknowledge call (the test may now clear the
// alarm), and last {"done": true, "error", "acknowledge", "events": [...]}. Errors are OPC UA status names.
"use strict";

const fs = require("fs");
const {
    AttributeIds,
    ClientMonitoredItem,
    ClientSubscription,
    DataType,
    MessageSecurityMode,
    OPCUACertificateManager,
    OPCUAClient,
    SecurityPolicy,
    TimestampsToReturn,
    UserTokenType,
    constructEventFilter,
    resolveNodeId,
} = require("node-opcua");

const plan = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const FIELDS = [
    "EventId",
    "EventType",
    "SourceName",
    "ConditionName",
    "Severity",
    "Message",
    "Retain",
    "ActiveState.Id",
    "AckedState.Id",
    "LimitState.CurrentState",
    "Comment",
    "ConditionId",
];

function emit(line) {
    process.stdout.write(JSON.stringify(line) + "\n");
}

function statusName(error) {
    const text = String(error && (error.message || error));
    const found = text.match(/Bad[A-Za-z]+/);
    return found ? found[0] : text.split("\n")[0];
}

function text(value) {
    if (value === null || value === undefined) {
        return null;
    }
    if (typeof value === "object" && "text" in value) {
        return value.text;
    }
    return value.toString();
}

function described(variants) {
    const values = {};
    FIELDS.forEach((name, index) => {
        values[name] = variants[index] ? variants[index].value : null;
    });
    const conditionId = values.ConditionId;
    return {
        raw: values,
        line: {
            conditionId: conditionId ? conditionId.toString() : null,
            eventType: values.EventType ? values.EventType.toString() : null,
            sourceName: values.SourceName,
            conditionName: values.ConditionName,
            severity: values.Severity,
            message: text(values.Message),
            retain: values.Retain,
            active: values["ActiveState.Id"],
            acknowledged: values["AckedState.Id"],
            limitState: text(values["LimitState.CurrentState"]),
            comment: text(values.Comment),
        },
    };
}

async function main() {
    const outcome = { done: true, error: null, acknowledge: null, events: [] };
    const certificateManager = new OPCUACertificateManager({
        rootFolder: plan.pkiDir,
        automaticallyAcceptUnknownCertificate: true,
    });
    const client = OPCUAClient.create({
        applicationName: "aas-server node-opcua alarm client",
        applicationUri: plan.applicationUri,
        clientCertificateManager: certificateManager,
        certificateFile: plan.certificateFile,
        privateKeyFile: plan.privateKeyFile,
        securityMode: MessageSecurityMode[plan.securityMode],
        securityPolicy: SecurityPolicy[plan.securityPolicy],
        endpointMustExist: false,
        connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
        requestedSessionTimeout: 60000,
    });
    try {
        await client.connect(plan.endpoint);
        const session = await client.createSession({
            type: UserTokenType.UserName,
            userName: plan.user.name,
            password: plan.user.password,
        });
        try {
            const subscription = ClientSubscription.create(session, {
                requestedPublishingInterval: 50,
                requestedLifetimeCount: 1000,
                requestedMaxKeepAliveCount: 20,
                maxNotificationsPerPublish: 100,
                publishingEnabled: true,
                priority: 1,
            });
            await new Promise((resolve) => subscription.on("started", resolve));
            const filter = constructEventFilter(FIELDS);
            const item = ClientMonitoredItem.create(
                subscription,
                { nodeId: resolveNodeId("Server"), attributeId: AttributeIds.EventNotifier },
                { queueSize: 100, filter, discardOldest: true },
                TimestampsToReturn.Neither,
            );
            const phases = { active: null, acknowledged: false, inactive: false };
            const finished = new Promise((resolve, reject) => {
                const timer = setTimeout(() => reject(new Error("timeout waiting for the alarm")), plan.timeoutMs);
                item.on("changed", (variants) => {
                    const { raw, line } = described(variants);
                    if (line.conditionName !== plan.condition) {
                        return;
                    }
                    outcome.events.push(line);
                    emit({ event: "alarm", ...line });
                    if (line.active && !line.acknowledged && phases.active === null) {
                        phases.active = { eventId: raw.EventId, conditionId: raw.ConditionId };
                        acknowledge(session, phases.active).then(
                            (status) => {
                                outcome.acknowledge = status;
                                emit({ event: "acknowledged", status });
                            },
                            (error) => {
                                clearTimeout(timer);
                                reject(error);
                            },
                        );
                    } else if (line.acknowledged && phases.active !== null) {
                        phases.acknowledged = true;
                    }
                    if (phases.acknowledged && line.active === false) {
                        clearTimeout(timer);
                        resolve();
                    }
                });
            });
            await new Promise((resolve) => item.on("initialized", resolve));
            emit({ event: "subscribed" });
            await finished;
            await subscription.terminate();
        } finally {
            await session.close();
        }
    } catch (error) {
        outcome.error = statusName(error);
    } finally {
        await client.disconnect();
        await certificateManager.dispose();
    }
    emit(outcome);
}

async function acknowledge(session, active) {
    const result = await session.call({
        objectId: active.conditionId,
        methodId: resolveNodeId("AcknowledgeableConditionType_Acknowledge"),
        inputArguments: [
            { dataType: DataType.ByteString, value: active.eventId },
            { dataType: DataType.LocalizedText, value: { text: plan.comment } },
        ],
    });
    return result.statusCode.name;
}

main().then(
    () => process.exit(0),
    (error) => {
        emit({ done: true, error: statusName(error), acknowledge: null, events: [] });
        process.exit(1);
    },
);
